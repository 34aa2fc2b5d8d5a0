//! `slo …`: the latency objectives of the rules (`slo = ["GET /a: p95<300ms"]`), one check per
//! objective whose route is this route (any query parameter names): is the candidate's
//! percentile below the bound? Judged on the candidate alone, from its HDR histogram, and only
//! when enough samples lie above the percentile (`settings.tail_samples`).

use super::{CheckName, RouteCheck, RouteEvidence};
use crate::config::{DiffConfig, Slo};
use crate::engine::estimable;
use crate::fmt::fmt_us;
use crate::outcome::{Check, Classification, RouteReport};
use crate::route::without_query;

/// The `slo …` checks.
#[derive(Debug)]
pub(super) struct Slos;

impl RouteCheck for Slos {
    fn check(&self, r: &RouteEvidence<'_>, cfg: &DiffConfig, out: &mut Vec<Check>) {
        let s = &cfg.settings;
        for slo in cfg.slos.iter().filter(|slo| applies(slo, r.route)) {
            let q = slo.percentile.0;
            let label = slo.percentile.label();
            let n = r.candidate_latency.len();
            let (classification, reason) = if estimable(n as usize, q, s) {
                let v = r.candidate_latency.value_at_quantile(q);
                if v < slo.max_us {
                    (
                        Classification::Pass,
                        format!("{label} {} < {}", fmt_us(v), fmt_us(slo.max_us)),
                    )
                } else {
                    (
                        Classification::High,
                        format!(
                            "{label} {} breaks the objective < {}",
                            fmt_us(v),
                            fmt_us(slo.max_us)
                        ),
                    )
                }
            } else {
                (
                    Classification::Nodata,
                    format!("{n} samples are too few for {label}"),
                )
            };
            out.push(Check {
                name: CheckName::slo(slo),
                classification,
                critical: s.critical_slo,
                weight: s.weight_slo,
                reason,
            });
        }
    }
}

/// Whether objective `slo` is judged on route `route`.
fn applies(slo: &Slo, route: &str) -> bool {
    without_query(route) == slo.route
}

/// The objectives that matched none of `routes`.
pub(crate) fn unmatched<'a>(
    cfg: &'a DiffConfig,
    routes: &'a [RouteReport],
) -> impl Iterator<Item = &'a Slo> {
    cfg.slos
        .iter()
        .filter(|slo| !routes.iter().any(|r| applies(slo, &r.route)))
}
