//! `ShouldRateLimit`: from a request's descriptors to one answer per descriptor.
//!
//! Each descriptor is resolved to a [`Rule`] (the request's `limit` override, else the
//! domain's YAML), its hits (`hits_addend` of the descriptor, else of the request, at
//! least 1) and a counter key (domain, the request's entries, unit, algorithm). Then:
//!
//! - `atomic: true` (default): the enforced descriptors of one request are decided in
//!   one store call per distinct hits value, all-or-nothing within it — either every
//!   descriptor of the call admits its hits and all are charged, or none is. With
//!   several hits values the calls run one after another; after a refusal the later
//!   calls only read (hits 0), so nothing more is charged.
//! - `atomic: false` (the reference's behaviour): every descriptor is decided and
//!   charged on its own, and a fixed window counts every request's hits, the request
//!   that crosses the limit and those after it included; a descriptor is over when its
//!   count exceeds the limit (GCRA and sliding windows never count a refused request).
//! - Shadow descriptors are always decided on their own (they must never keep an
//!   enforced descriptor from being charged) and always answered OK.
//!
//! Every store call is bounded by the limiter's timeout (the whole phase by 1.5 times
//! it, for requests with several hits values); when the store fails the
//! failure mode answers: `open` → OK, `closed` → gRPC `UNAVAILABLE` (Envoy's
//! `failure_mode_deny` then decides), `local` → this process's fallback store.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit as PbLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitService;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use metrics::SharedString;
use tollgate::limiter::LimitStatus;
use tollgate::{Algorithm, Decision, DecisionKind, FailureMode};
use tonic::{Request, Response, Status};

use super::config::{Domain, Rule};
use crate::runtime::{Runtime, Shared};
use crate::telemetry::{self, RLS_DESCRIPTORS, RLS_REQUESTS};

/// The policy name of every RLS decision (metrics label, first part of storage keys).
const POLICY: &str = "rls";
/// Most descriptors accepted in one request.
const MAX_DESCRIPTORS: usize = 64;
/// Most entries accepted in one descriptor.
const MAX_ENTRIES: usize = 32;

/// The gRPC service: answers from the runtime in force at each call.
#[derive(Clone)]
pub struct RlsService {
    state: Shared,
    node: SharedString,
}

impl RlsService {
    /// A service answering from `state` (swapped on reload).
    pub fn new(state: Shared) -> Self {
        let node = telemetry::node_label(&state.load().config.node_id);
        RlsService { state, node }
    }
}

#[tonic::async_trait]
impl RateLimitService for RlsService {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let runtime = self.state.load_full();
        let request = request.into_inner();
        let result = should_rate_limit(&runtime, &request, &self.node).await;
        let (domain, code) = match &result {
            Ok((domain, response)) => (
                domain.clone(),
                if response.overall_code == Code::OverLimit as i32 {
                    "over_limit"
                } else {
                    "ok"
                },
            ),
            Err((domain, status)) => (
                domain.clone(),
                if status.code() == tonic::Code::Unavailable {
                    "unavailable"
                } else {
                    "invalid"
                },
            ),
        };
        metrics::counter!(RLS_REQUESTS, "node" => self.node.clone(), "domain" => domain, "code" => code)
            .increment(1);
        result.map(|(_, r)| Response::new(r)).map_err(|(_, s)| s)
    }
}

/// What one descriptor needs.
enum Plan {
    /// No rule applies (or it was replaced): OK, nothing counted.
    Unmatched,
    /// `unlimited: true`: OK, nothing counted (the rule's place, for metrics).
    Unlimited(Arc<str>),
    /// Decide `hits` of `rule` under `key`.
    Limit {
        rule: Arc<Rule>,
        key: String,
        hits: u64,
    },
}

/// The answer for one descriptor.
#[derive(Default)]
struct Answer {
    over: bool,
    /// Would have been over, but the rule is in shadow mode.
    shadow_over: bool,
    remaining: u32,
    status: Option<LimitStatus>,
}

type Failure = (SharedString, Status);

fn domain_label(domain: Option<&Domain>, name: &str) -> SharedString {
    match domain {
        Some(d) => SharedString::from(d.name.clone()),
        None if name.is_empty() => SharedString::const_str("(none)"),
        None => SharedString::const_str("(unknown)"),
    }
}

async fn should_rate_limit(
    runtime: &Runtime,
    request: &RateLimitRequest,
    node: &SharedString,
) -> Result<(SharedString, RateLimitResponse), Failure> {
    let Some(rls) = runtime.config.rls.as_ref() else {
        return Err((
            SharedString::const_str("(none)"),
            Status::failed_precondition("this sidecar has no rate limit service configuration"),
        ));
    };
    let domain = rls.rules.domain(&request.domain);
    let label = domain_label(domain, &request.domain);
    let invalid = |reason: String| Err((label.clone(), Status::invalid_argument(reason)));
    if request.domain.is_empty() {
        return invalid("rate limit domain must not be empty".into());
    }
    if request.descriptors.is_empty() {
        return invalid("rate limit descriptor list must not be empty".into());
    }
    if request.descriptors.len() > MAX_DESCRIPTORS {
        return invalid(format!("at most {MAX_DESCRIPTORS} descriptors per request"));
    }
    let mut plans = Vec::with_capacity(request.descriptors.len());
    for (i, d) in request.descriptors.iter().enumerate() {
        if d.entries.len() > MAX_ENTRIES {
            return invalid(format!("descriptors[{i}]: at most {MAX_ENTRIES} entries"));
        }
        if d.is_negative_hits {
            // A refund: the store has no way to give units back.
            return invalid(format!(
                "descriptors[{i}]: is_negative_hits is not supported"
            ));
        }
        match plan(&request.domain, domain, d, request.hits_addend) {
            Ok(p) => plans.push(p),
            Err(reason) => return invalid(format!("descriptors[{i}]: {reason}")),
        }
    }
    replace(&mut plans);

    let atomic = domain.is_none_or(|d| d.atomic);
    let limiter = &runtime.limiter;
    // The limiter bounds each store call by its timeout and applies the failure mode
    // itself; this outer bound (half as long again) only catches calls that queue up.
    let bound = runtime.config.limiter.timeout.mul_f32(1.5);
    let decided = tokio::time::timeout(bound, decide(limiter, &plans, atomic)).await;
    let (answers, template) = match decided {
        Ok(Ok(done)) => done,
        Ok(Err(Closed)) => {
            return Err((label, Status::unavailable("rate limit store unavailable")));
        }
        Err(_) if limiter.failure_mode() == FailureMode::Closed => {
            return Err((
                label,
                Status::unavailable("rate limit store did not answer in time"),
            ));
        }
        // Open (or local, whose fallback did not answer in time either): let it pass.
        Err(_) => (plans.iter().map(|_| Answer::default()).collect(), None),
    };

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut response = RateLimitResponse::default();
    let mut any_over = false;
    for ((plan, answer), d) in plans.iter().zip(&answers).zip(&request.descriptors) {
        let result = match plan {
            Plan::Unmatched => "unmatched",
            Plan::Unlimited(_) => "unlimited",
            Plan::Limit { .. } if answer.over => "over_limit",
            Plan::Limit { .. } if answer.shadow_over => "shadow_over_limit",
            Plan::Limit { .. } => "ok",
        };
        metrics::counter!(RLS_DESCRIPTORS, "node" => node.clone(), "domain" => label.clone(), "descriptor" => descriptor_label(plan, d), "result" => result)
            .increment(1);
        response.statuses.push(match plan {
            Plan::Unmatched => DescriptorStatus {
                code: Code::Ok as i32,
                ..DescriptorStatus::default()
            },
            Plan::Unlimited(_) => DescriptorStatus {
                code: Code::Ok as i32,
                limit_remaining: u32::MAX,
                ..DescriptorStatus::default()
            },
            Plan::Limit { rule, .. } => {
                any_over |= answer.over;
                DescriptorStatus {
                    code: if answer.over {
                        Code::OverLimit
                    } else {
                        Code::Ok
                    } as i32,
                    current_limit: Some(PbLimit {
                        name: rule.name.clone(),
                        requests_per_unit: rule.requests_per_unit,
                        unit: rule.unit.to_proto(),
                    }),
                    limit_remaining: if answer.over { 0 } else { answer.remaining },
                    duration_until_reset: Some(until_reset(rule, answer, now)),
                    ..DescriptorStatus::default()
                }
            }
        });
    }
    // Global shadow mode: recorded, never refused.
    let over = any_over && !runtime.config.limiter.shadow;
    response.overall_code = if over { Code::OverLimit } else { Code::Ok } as i32;
    if let Some(mut decision) = template {
        decision.limits = answers.iter().filter_map(|a| a.status.clone()).collect();
        let mut headers = http::HeaderMap::new();
        runtime.layer_headers(&decision, &mut headers);
        response.response_headers_to_add = headers
            .iter()
            .map(|(name, value)| HeaderValue {
                key: name.as_str().to_owned(),
                value: value.to_str().unwrap_or_default().to_owned(),
                ..HeaderValue::default()
            })
            .collect();
    }
    Ok((label, response))
}

/// Fixed windows reset at the unit's boundary (as the reference computes it); the other
/// algorithms when their state has fully recovered.
fn until_reset(rule: &Rule, answer: &Answer, now: u64) -> PbDuration {
    let unit = rule.unit.seconds();
    let secs = match (&answer.status, rule.algorithm) {
        (Some(status), Algorithm::Gcra | Algorithm::SlidingWindow) => {
            u64::try_from(status.verdict.reset_after_us)
                .unwrap_or(0)
                .div_ceil(1_000_000)
        }
        _ => unit - now % unit,
    };
    PbDuration {
        seconds: i64::try_from(secs).unwrap_or(i64::MAX),
        nanos: 0,
    }
}

fn plan(
    domain_name: &str,
    domain: Option<&Domain>,
    d: &RateLimitDescriptor,
    request_hits: u32,
) -> Result<Plan, String> {
    let rule = match &d.limit {
        Some(o) => Arc::new(Rule::from_override(o.requests_per_unit, o.unit)?),
        None => {
            let entries = d.entries.iter().map(|e| (e.key.as_str(), e.value.as_str()));
            match domain.and_then(|dom| dom.rule(entries)) {
                Some(rule) => rule.clone(),
                None => return Ok(Plan::Unmatched),
            }
        }
    };
    if rule.unlimited {
        return Ok(Plan::Unlimited(rule.path.clone()));
    }
    let hits = match &d.hits_addend {
        Some(h) => h.value,
        None => u64::from(request_hits.max(1)),
    };
    let mut key = String::new();
    let mut push = |s: &str| {
        key.push_str(&s.len().to_string());
        key.push(':');
        key.push_str(s);
    };
    push(domain_name);
    for e in &d.entries {
        push(&e.key);
        push(&e.value);
    }
    push(rule.unit.as_str());
    push(rule.algorithm.as_str());
    Ok(Plan::Limit { rule, key, hits })
}

/// The reference's `replaces`: a rule named in another applying rule's `replaces` is
/// dropped from this request.
fn replace(plans: &mut [Plan]) {
    let replaced: Vec<String> = plans
        .iter()
        .filter_map(|p| match p {
            Plan::Limit { rule, .. } => Some(rule.replaces.iter().cloned()),
            _ => None,
        })
        .flatten()
        .collect();
    if replaced.is_empty() {
        return;
    }
    for plan in plans.iter_mut() {
        if let Plan::Limit { rule, .. } = plan {
            if !rule.name.is_empty() && replaced.contains(&rule.name) {
                *plan = Plan::Unmatched;
            }
        }
    }
}

/// The store failed and the failure mode is `closed`.
struct Closed;

/// One answer per plan, and a decision to carry the `RateLimit` headers.
async fn decide(
    limiter: &tollgate::RateLimiter,
    plans: &[Plan],
    atomic: bool,
) -> Result<(Vec<Answer>, Option<Decision>), Closed> {
    let mut answers: Vec<Answer> = plans.iter().map(|_| Answer::default()).collect();
    let mut template = None;
    // Descriptors decided on their own: all of a non-atomic domain, and shadow ones.
    let alone: Vec<usize> = plans
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p {
            Plan::Limit { rule, .. } if rule.limit.is_some() && (!atomic || rule.shadow) => Some(i),
            _ => None,
        })
        .collect();
    let alone_decisions = futures_util::future::join_all(alone.iter().map(|&i| async move {
        match &plans[i] {
            Plan::Limit { rule, key, hits } => {
                decide_alone(limiter, rule, key, *hits, atomic).await
            }
            _ => Ok(None),
        }
    }))
    .await;
    for (&i, result) in alone.iter().zip(alone_decisions) {
        let Plan::Limit { rule, .. } = &plans[i] else {
            continue;
        };
        let Some((decision, status)) = result? else {
            continue;
        };
        answers[i] = answer(rule, status.as_ref());
        template.get_or_insert(decision);
    }

    // The atomic ones: one store call per distinct hits value, in order of appearance.
    let mut groups: Vec<(u64, Vec<usize>)> = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        if let Plan::Limit { rule, hits, .. } = plan {
            if atomic && !rule.shadow && rule.limit.is_some() {
                match groups.iter_mut().find(|(h, _)| h == hits) {
                    Some((_, members)) => members.push(i),
                    None => groups.push((*hits, vec![i])),
                }
            }
        }
        // Zero requests per unit: refused without asking the store.
        if let Plan::Limit { rule, .. } = plan {
            if rule.limit.is_none() {
                answers[i] = Answer {
                    over: !rule.shadow,
                    shadow_over: rule.shadow,
                    ..Answer::default()
                };
            }
        }
    }
    let mut refused = false;
    for (hits, members) in groups {
        let limits: Vec<_> = members
            .iter()
            .filter_map(|&i| match &plans[i] {
                Plan::Limit { rule, key, .. } => rule.limit.clone().map(|l| (l, key.clone())),
                _ => None,
            })
            .collect();
        // After a refusal, only read: nothing more of this request is charged.
        let cost = if refused { 0 } else { hits };
        let decision = match limiter.decide_many(POLICY, &limits, cost).await {
            Ok(decision) => decision,
            Err(e) => {
                // Names are checked at load; say so loudly if that ever changes.
                tracing::error!(error = %e, "rls: limit refused by the limiter");
                continue;
            }
        };
        if matches!(decision.kind, DecisionKind::FailedClosed { .. }) {
            return Err(Closed);
        }
        refused |= decision.kind == DecisionKind::Limited;
        for (n, &i) in members.iter().enumerate() {
            if let Plan::Limit { rule, .. } = &plans[i] {
                answers[i] = answer(rule, decision.limits.get(n));
            }
        }
        template.get_or_insert(decision);
    }
    Ok((answers, template))
}

/// One descriptor decided on its own. A fixed window of an `atomic: false` domain is
/// counted as the reference counts it ([`Rule::counting`]): every request adds its
/// hits, and the descriptor is over when the count exceeds the limit.
async fn decide_alone(
    limiter: &tollgate::RateLimiter,
    rule: &Rule,
    key: &str,
    hits: u64,
    atomic: bool,
) -> Result<Option<(Decision, Option<LimitStatus>)>, Closed> {
    let (limit, counting) = match (&rule.limit, &rule.counting) {
        (Some(limit), Some(counting)) if !atomic => (limit, Some(counting)),
        (Some(limit), _) => (limit, None),
        (None, _) => return Ok(None),
    };
    let one = [(counting.unwrap_or(limit).clone(), key.to_owned())];
    let decision = limiter
        .decide_many(POLICY, &one, hits)
        .await
        .map_err(|_| Closed)?;
    if matches!(decision.kind, DecisionKind::FailedClosed { .. }) {
        return Err(Closed);
    }
    let mut status = decision.limits.first().cloned();
    if let (Some(counting), Some(s)) = (counting, status.as_mut()) {
        // The count after this request, from what the roomy window has left.
        let count = counting.spec().quota().saturating_sub(s.verdict.remaining);
        let quota = limit.spec().quota();
        s.verdict.allowed = s.verdict.allowed && count <= quota;
        s.verdict.remaining = quota.saturating_sub(count);
        s.spec = *limit.spec();
    }
    Ok(Some((decision, status)))
}

fn answer(rule: &Rule, status: Option<&LimitStatus>) -> Answer {
    let Some(status) = status else {
        // The store did not answer and the failure mode let it pass (or no limit).
        let over = rule.limit.is_none();
        return Answer {
            over: over && !rule.shadow,
            shadow_over: over && rule.shadow,
            remaining: 0,
            status: None,
        };
    };
    let remaining = u32::try_from(status.verdict.remaining).unwrap_or(u32::MAX);
    let over = !status.verdict.allowed;
    Answer {
        over: over && !rule.shadow,
        shadow_over: over && rule.shadow,
        remaining,
        status: Some(status.clone()),
    }
}

/// The `descriptor` label: the rule's place in its file (bounded by the
/// configuration), or the request's entries when the rule asks for `detailed_metric`.
fn descriptor_label(plan: &Plan, d: &RateLimitDescriptor) -> SharedString {
    match plan {
        Plan::Limit { .. } if d.limit.is_some() => SharedString::const_str("(override)"),
        Plan::Limit { rule, .. } if rule.detailed_metric => SharedString::from(
            d.entries
                .iter()
                .map(|e| {
                    if e.value.is_empty() {
                        e.key.clone()
                    } else {
                        format!("{}_{}", e.key, e.value)
                    }
                })
                .collect::<Vec<_>>()
                .join("."),
        ),
        Plan::Limit { rule, .. } => SharedString::from(rule.path.clone()),
        Plan::Unlimited(path) => SharedString::from(path.clone()),
        Plan::Unmatched => SharedString::const_str("(none)"),
    }
}
