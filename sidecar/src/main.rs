//! `tollgate-sidecar`: placeholder until the sidecar issue lands.

fn main() {
    eprintln!("tollgate-sidecar is not implemented yet; see the `tollgate` crate's examples");
    std::process::exit(69);
}
