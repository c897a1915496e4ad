//! Event Hub partitions: the continuity of their sequence numbers. A batch is classified
//! against what the lake has committed for its partition: following on, a gap (sequence
//! numbers that never arrived), a redelivery (numbers at or below the watermark), or a
//! restarted sequence (a hub deleted and recreated under the same name starts again at 0),
//! which opens a new *epoch* of the source with its own source id. Pure: the state comes in,
//! the verdict goes out ([`crate::ingest::eventhub`] reads and records the state).

use crate::decode::Unit;
use crate::model::SourceId;

/// What the batch was, relative to the committed state of its partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Continuity {
    /// The epoch the batch belongs to (0 until a restarted sequence is seen).
    pub epoch: u32,
    /// The partition's sequence restarted with this batch: a new epoch began, whose
    /// predecessor had reached this watermark.
    pub restarted_after: Option<i64>,
    /// Sequence numbers between the watermark and this batch's first that never arrived
    /// (inclusive range).
    pub gap: Option<(i64, i64)>,
    /// Events at or below the watermark (a redelivery): their range and count.
    pub redelivered: Option<(i64, i64, u64)>,
    /// The watermark the batch was checked against.
    pub watermark: Option<i64>,
}

impl Continuity {
    /// A sentence for the run table and the logs; `None` when the batch simply followed on.
    pub fn note(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(w) = self.restarted_after {
            parts.push(format!(
                "sequence restarted (hub recreated?): events enqueued after everything committed \
                 came at or below watermark {w}; epoch {} began",
                self.epoch
            ));
        }
        if let Some((a, b)) = self.gap {
            parts.push(format!(
                "gap: sequence numbers {a}-{b} ({} events) never arrived (retention expiry, or a \
                 batch delivered out of order)",
                b - a + 1
            ));
        }
        if let Some((a, b, n)) = self.redelivered {
            parts.push(format!(
                "redelivered: {n} events with sequence numbers {a}-{b}, at or below watermark {}",
                self.watermark.unwrap_or(-1)
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// The source id of `partition`'s epoch `n`.
pub fn epoch_source(partition: &SourceId, epoch: u32) -> SourceId {
    if epoch == 0 {
        partition.clone()
    } else {
        SourceId::custom(format!("{partition}#epoch{epoch}"))
    }
}

/// The txn id (in `_ingest_runs`) of the newest enqueued time recorded for an epoch.
pub fn enqueued_txn(source: &SourceId) -> String {
    format!("xdr:enqueued:{source}")
}

/// The txn id (in `_ingest_runs`) of a partition's current epoch.
pub fn epoch_txn(partition: &SourceId) -> String {
    format!("xdr:epoch:{partition}")
}

/// Checks a batch's positions: non-negative and strictly increasing (what a partition
/// delivers); the error says which event breaks it.
pub fn check_positions(units: &[Unit<'_>]) -> Result<(), String> {
    for (i, u) in units.iter().enumerate() {
        if u.position < 0 {
            return Err(format!(
                "event {i} has sequence number {}; Event Hub sequence numbers are never negative",
                u.position
            ));
        }
        if i > 0 && u.position <= units[i - 1].position {
            return Err(format!(
                "event {i} has sequence number {} after {}; a partition's batch is strictly increasing",
                u.position,
                units[i - 1].position
            ));
        }
    }
    Ok(())
}

/// Classifies a batch against the partition's state: `epoch`, the epoch's `watermark` and
/// newest recorded enqueued time.
pub fn classify(
    units: &[Unit<'_>],
    epoch: u32,
    watermark: Option<i64>,
    newest_enqueued: Option<i64>,
) -> Continuity {
    let mut c = Continuity {
        epoch,
        watermark,
        ..Default::default()
    };
    let Some(first) = units.first() else {
        return c;
    };
    // Sequence numbers start at 0: a partition's first batch starting later is a gap too
    // (retention expired before the consumer group started, or batches out of order).
    let w = watermark.unwrap_or(-1);
    // A committed event was enqueued no later than the newest enqueued time recorded with
    // it, so an event at or below the watermark enqueued after that cannot be a redelivery:
    // the partition's numbering started again.
    let restarted = newest_enqueued.is_some_and(|e| {
        units
            .iter()
            .any(|u| u.position <= w && u.enqueued_at.is_some_and(|t| t > e))
    });
    if restarted {
        c.epoch = epoch + 1;
        c.restarted_after = Some(w);
        c.watermark = None;
        return c;
    }
    if first.position > w + 1 {
        c.gap = Some((w + 1, first.position - 1));
    }
    let below: Vec<i64> = units
        .iter()
        .map(|u| u.position)
        .filter(|p| *p <= w)
        .collect();
    if let (Some(a), Some(b)) = (below.first(), below.last()) {
        c.redelivered = Some((*a, *b, below.len() as u64));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(seqs: &[(i64, Option<i64>)]) -> Vec<Unit<'static>> {
        seqs.iter()
            .map(|(p, t)| Unit {
                bytes: b"{}",
                full_len: 2,
                position: *p,
                enqueued_at: *t,
            })
            .collect()
    }

    #[test]
    fn classifies_followers_gaps_redeliveries_and_restarts() {
        let u = units(&[(10, Some(100)), (11, Some(101))]);
        assert_eq!(classify(&u, 0, Some(9), Some(99)).note(), None);
        assert_eq!(classify(&u[..0], 0, None, None).note(), None);
        // a first batch that does not start at 0
        assert_eq!(classify(&u, 0, None, None).gap, Some((0, 9)));
        assert_eq!(classify(&units(&[(0, None)]), 0, None, None).note(), None);
        let g = classify(&u, 0, Some(4), Some(99));
        assert_eq!(g.gap, Some((5, 9)));
        let r = classify(&u, 0, Some(10), Some(100));
        assert_eq!(r.redelivered, Some((10, 10, 1)));
        assert_eq!(r.gap, None);
        let all = classify(&u, 0, Some(50), Some(500));
        assert_eq!(all.redelivered, Some((10, 11, 2)));
        assert_eq!(all.epoch, 0);
        // below the watermark but enqueued after everything recorded: a restarted sequence
        let restart = classify(
            &units(&[(0, Some(900)), (1, Some(901))]),
            0,
            Some(50),
            Some(500),
        );
        assert_eq!((restart.epoch, restart.restarted_after), (1, Some(50)));
        assert!(restart.note().unwrap().contains("epoch 1"));
        // without enqueued times it cannot be told from a redelivery: counted as one
        let unknown = classify(&units(&[(0, None)]), 0, Some(50), Some(500));
        assert_eq!((unknown.epoch, unknown.redelivered), (0, Some((0, 0, 1))));
    }

    #[test]
    fn positions_must_be_non_negative_and_increasing() {
        assert!(check_positions(&units(&[(0, None), (1, None)])).is_ok());
        let e = check_positions(&units(&[(-5, None)])).unwrap_err();
        assert!(e.to_string().contains("never negative"), "{e}");
        assert!(check_positions(&units(&[(3, None), (3, None)])).is_err());
        assert_eq!(
            epoch_source(&SourceId::event_hub("n", "h", "1"), 2).as_str(),
            "eventhub://n/h/1#epoch2"
        );
    }
}
