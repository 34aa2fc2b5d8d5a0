//! Pairing result rows by `origin_id`, streaming.
//!
//! Replay writes the rows of one origin (one per target) next to each other, so a group is
//! usually complete a few rows after it starts and memory stays bounded. Rows that arrive apart
//! are tolerated: a group waits in a map of at most `max_pending` origins; beyond that the oldest
//! is given up (emitted if it has baseline and candidate, counted unpaired otherwise).

use std::collections::{HashMap, VecDeque};

use tapedeck_storage::Exchange;
use uuid::Uuid;

use crate::outcome::Counts;

/// Which side a row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Baseline,
    Candidate,
    Secondary,
}

/// The responses to one recorded request.
#[derive(Debug, Default)]
pub(crate) struct Group {
    pub(crate) baseline: Option<Exchange>,
    pub(crate) candidate: Option<Exchange>,
    pub(crate) secondary: Option<Exchange>,
}

impl Group {
    fn slot(&mut self, role: Role) -> &mut Option<Exchange> {
        match role {
            Role::Baseline => &mut self.baseline,
            Role::Candidate => &mut self.candidate,
            Role::Secondary => &mut self.secondary,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Pairer {
    want_secondary: bool,
    /// `--baseline-tape`: baseline-only groups are recorded exchanges that were not replayed.
    baseline_is_tape: bool,
    max_pending: usize,
    pending: HashMap<Uuid, Group>,
    order: VecDeque<Uuid>,
}

impl Pairer {
    pub(crate) fn new(want_secondary: bool, baseline_is_tape: bool, max_pending: usize) -> Self {
        Self {
            want_secondary,
            baseline_is_tape,
            max_pending,
            pending: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn complete(&self, g: &Group) -> bool {
        g.baseline.is_some()
            && g.candidate.is_some()
            && (!self.want_secondary || g.secondary.is_some())
    }

    /// Adds one row; calls `emit` for every group that became complete or was given up.
    pub(crate) fn push(
        &mut self,
        origin: Uuid,
        role: Role,
        ex: Exchange,
        counts: &mut Counts,
        emit: &mut impl FnMut(Group, &mut Counts),
    ) {
        let is_new = !self.pending.contains_key(&origin);
        let group = self.pending.entry(origin).or_default();
        let slot = group.slot(role);
        if slot.is_some() {
            counts.duplicates += 1;
            return;
        }
        *slot = Some(ex);
        if is_new {
            self.order.push_back(origin);
        }
        let done = self.pending.get(&origin).is_some_and(|g| self.complete(g));
        if done && let Some(g) = self.pending.remove(&origin) {
            emit(g, counts);
        }
        while self.pending.len() > self.max_pending {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(g) = self.pending.remove(&old) {
                counts.evicted += 1;
                self.give_up(g, counts, emit);
            }
        }
        if self.order.len() > 2 * self.max_pending + 1024 {
            let pending = &self.pending;
            self.order.retain(|id| pending.contains_key(id));
        }
    }

    fn give_up(&self, g: Group, counts: &mut Counts, emit: &mut impl FnMut(Group, &mut Counts)) {
        match (&g.baseline, &g.candidate) {
            (Some(_), Some(_)) => emit(g, counts),
            (Some(_), None) if self.baseline_is_tape => counts.not_replayed += 1,
            (Some(_), None) => counts.baseline_only += 1,
            (None, Some(_)) => counts.candidate_only += 1,
            (None, None) => {}
        }
    }

    /// Ends the stream: every group still waiting is emitted or counted unpaired.
    pub(crate) fn finish(
        &mut self,
        counts: &mut Counts,
        emit: &mut impl FnMut(Group, &mut Counts),
    ) {
        while let Some(id) = self.order.pop_front() {
            if let Some(g) = self.pending.remove(&id) {
                self.give_up(g, counts, emit);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex() -> Exchange {
        Exchange::default()
    }

    #[test]
    fn pairs_adjacent_and_apart_rows_and_counts_the_rest() {
        let mut p = Pairer::new(false, false, 2);
        let mut counts = Counts::default();
        let mut got = 0;
        let mut emit = |_g: Group, _c: &mut Counts| got += 1;
        let ids: Vec<Uuid> = (0..5u128).map(Uuid::from_u128).collect();
        p.push(ids[0], Role::Baseline, ex(), &mut counts, &mut emit);
        p.push(ids[0], Role::Candidate, ex(), &mut counts, &mut emit);
        p.push(ids[1], Role::Candidate, ex(), &mut counts, &mut emit);
        p.push(ids[2], Role::Baseline, ex(), &mut counts, &mut emit);
        p.push(ids[2], Role::Baseline, ex(), &mut counts, &mut emit); // duplicate
        p.push(ids[1], Role::Baseline, ex(), &mut counts, &mut emit); // apart, still paired
        p.push(ids[3], Role::Baseline, ex(), &mut counts, &mut emit);
        p.push(ids[4], Role::Candidate, ex(), &mut counts, &mut emit); // evicts ids[2]
        p.finish(&mut counts, &mut emit);
        assert_eq!(got, 2);
        assert_eq!(counts.duplicates, 1);
        assert_eq!(counts.baseline_only, 2);
        assert_eq!(counts.candidate_only, 1);
        assert_eq!(counts.evicted, 1);
    }
}
