//! One origin (a recorded request) sent to every target at the same scheduled instant.

use std::sync::Arc;
use std::time::Instant;

use futures_util::future::join_all;
use tapedeck_storage::{ErrorKind, Exchange};

use super::reader::Item;
use crate::conn::Pool;
use crate::send::{SendSettings, Slot, exchange, fill_request, fill_request_owned};

/// Sends `p` to every target (`pools`, in target order) and appends its results to `out`, in
/// target order (one per target). `slots` are the sender's, one per target (a slot without a
/// connection takes one from the pool; reusable connections are left in them).
///
/// Every target's request starts in the same task without waiting for another's, in an order
/// rotated per origin: no target is systematically written first, so none carries a systematic
/// share of the send lateness into its latency (measured from the scheduled time).
pub(super) async fn replay_origin(
    p: Item,
    scheduled: Instant,
    s: &SendSettings,
    pools: &[Arc<Pool>],
    slots: &mut [Slot],
    out: &mut Vec<Exchange>,
) {
    if let Some(msg) = &p.unsendable {
        let at = s.clock.us(scheduled);
        out.extend(
            pools
                .iter()
                .map(|pool| unsendable(&p.origin, &pool.ep.target.name, at, msg)),
        );
        return;
    }
    let n = pools.len();
    if n == 1 {
        let mut p = p;
        let headers = std::mem::take(&mut p.headers);
        // Pinned where it is made: the request future is large and `.await` on it by value
        // would copy it into this future's state.
        let mut ex = std::pin::pin!(exchange(
            &pools[0],
            &mut slots[0],
            &p,
            headers,
            scheduled,
            s
        ))
        .await;
        fill_request_owned(&mut ex, p);
        out.push(ex);
        return;
    }
    let first = (p.origin.id.as_u128() % n as u128) as usize;
    let mut order: Vec<(usize, &mut Slot)> = slots.iter_mut().enumerate().collect();
    order.rotate_left(first);
    let sends = order.into_iter().map(|(i, slot)| {
        let p = &p;
        async move {
            let out = exchange(&pools[i], slot, p, p.headers.clone(), scheduled, s).await;
            (i, out)
        }
    });
    let mut done = join_all(sends).await;
    done.sort_unstable_by_key(|(i, _)| *i);
    let at = out.len();
    out.extend(done.into_iter().map(|(_, ex)| ex));
    let group = &mut out[at..];
    if let Some((last, rest)) = group.split_last_mut() {
        for ex in rest {
            fill_request(ex, &p);
        }
        fill_request_owned(last, p);
    }
    // One `started_at` for the whole group (its earliest send; each target's exact send time
    // is in `sent_at_us`): the tape is partitioned by the hour of `started_at`, so a group
    // whose sends straddle an hour boundary would otherwise be split across files.
    if let Some(first) = group.iter().map(|e| e.started_at_us).min() {
        for e in group.iter_mut() {
            e.started_at_us = first;
        }
    }
}

/// A result exchange for an origin that could not be sent at all.
pub(super) fn unsendable(origin: &Exchange, target: &str, at_us: i64, msg: &str) -> Exchange {
    Exchange {
        id: Exchange::new_id(),
        source: origin.source.clone(),
        started_at_us: at_us,
        method: origin.method.clone(),
        path: origin.path.clone(),
        query: origin.query.clone(),
        error_kind: Some(ErrorKind::Other),
        error: Some(msg.to_owned()),
        flags: origin.flags,
        origin_id: Some(origin.id),
        target: Some(target.to_owned()),
        scheduled_at_us: Some(at_us),
        sent_at_us: Some(at_us),
        ..Exchange::default()
    }
}
