//! Token rotation with reuse detection (docs/PROTOCOL.md 5.3): which of a device's tokens
//! a Resume accepts, and what the device record remembers for it. Pure: the record, the
//! presented token's place and the time in; a verdict and the next token's place out.
//!
//! Every token of a device has a generation `gen` (1, 2, ... in issue order; kept in
//! `DeviceRecord::token_issued`) and names its parent: the generation of the token whose
//! Resume it answered, 0 for a token made by Login. `DeviceRecord::token_used` is the
//! generation of the token the device last resumed with (the head). Accepted are:
//!
//! - a Login token, as long as no token issued after it has been used (`gen > used`);
//! - an answer to the head (`parent == used`): the normal rotation;
//! - the head itself again, for `grace` after its first use: the client never got (or
//!   never saved) the answer. Its new answer is a sibling of the lost one; whichever
//!   sibling is used first becomes the head and the others are refused.
//!
//! Anything else was rotated out: two parties hold the device's tokens (a thief and the
//! real client), so all of them are revoked. This is the refresh-token reuse detection
//! of the OAuth 2.0 Security BCP (RFC 9700, 4.14.2), with the leeway every real client
//! needs for a lost answer. A token from before rotation (generation 0) is accepted once,
//! while the device has no generation yet.

use crate::store::DeviceRecord;

/// Where a presented token sits in its device's chain (from its signed claims).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    pub(crate) gen: u64,
    /// 0: made by Login.
    pub(crate) parent: u64,
}

/// What a Resume with a token of this device gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A Login token's first use, or an answer to the head: it becomes the head.
    Rotate,
    /// The head again within the grace: accepted, the head stays.
    Grace,
    /// Rotated out: the device's tokens are revoked.
    Reuse,
}

pub(crate) fn judge(rec: &DeviceRecord, t: Place, now_ms: u64, grace_ms: u64) -> Verdict {
    let used = rec.token_used;
    if t.gen == 0 {
        // Issued before rotation existed: good until the device's first rotated token.
        return if rec.token_issued == 0 {
            Verdict::Rotate
        } else {
            Verdict::Reuse
        };
    }
    if t.parent == 0 && t.gen > used {
        return Verdict::Rotate;
    }
    if used != 0 && t.parent == used && t.gen > used {
        return Verdict::Rotate;
    }
    if used != 0 && t.gen == used && now_ms < rec.token_used_ms.saturating_add(grace_ms) {
        return Verdict::Grace;
    }
    Verdict::Reuse
}

/// Records an accepted Resume (`Rotate` or `Grace`) and returns the place of the token
/// that answers it.
pub(crate) fn accept(rec: &mut DeviceRecord, t: Place, verdict: Verdict, now_ms: u64) -> Place {
    // Never issue a generation twice, even if the store lost the newest `token_issued`.
    rec.token_issued = rec.token_issued.max(t.gen);
    if verdict == Verdict::Rotate {
        rec.token_used = if t.gen == 0 {
            // A pre-rotation token: a generation of its own, as if it had had one.
            rec.token_issued += 1;
            rec.token_issued
        } else {
            t.gen
        };
        rec.token_used_ms = now_ms;
    }
    rec.token_issued += 1;
    Place {
        gen: rec.token_issued,
        parent: rec.token_used,
    }
}

/// The place of a token made by Login. It leaves the device's other tokens alone: the
/// first one of them (or of its answers) to be used decides which chain continues.
pub(crate) fn login(rec: &mut DeviceRecord) -> Place {
    rec.token_issued += 1;
    Place {
        gen: rec.token_issued,
        parent: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: u64 = 300_000;

    /// A device and the places of the tokens handed out, driven like the server does.
    #[derive(Default)]
    struct Device {
        rec: DeviceRecord,
        now: u64,
    }

    impl Device {
        fn login(&mut self) -> Place {
            login(&mut self.rec)
        }
        /// The answer to a Resume with `t`, or the verdict that refused it.
        fn resume(&mut self, t: Place) -> Result<Place, Verdict> {
            match judge(&self.rec, t, self.now, GRACE) {
                Verdict::Reuse => Err(Verdict::Reuse),
                v => Ok(accept(&mut self.rec, t, v, self.now)),
            }
        }
    }

    #[test]
    fn each_answer_replaces_the_token_it_answered() {
        let mut d = Device::default();
        let l = d.login();
        let t1 = d.resume(l).unwrap();
        let t2 = d.resume(t1).unwrap();
        let t3 = d.resume(t2).unwrap();
        assert!(t1.gen < t2.gen && t2.gen < t3.gen);
        // t1 was rotated out by the use of t2.
        assert_eq!(judge(&d.rec, t1, d.now, GRACE), Verdict::Reuse);
        assert_eq!(judge(&d.rec, l, d.now, GRACE), Verdict::Reuse);
        assert_eq!(judge(&d.rec, t3, d.now, GRACE), Verdict::Rotate);
    }

    #[test]
    fn a_lost_answer_is_covered_by_the_grace_and_either_answer_then_works() {
        for keep_first in [true, false] {
            let mut d = Device::default();
            let t = {
                let l = d.login();
                d.resume(l).unwrap()
            };
            let lost = d.resume(t).unwrap();
            d.now += GRACE - 1;
            let again = d.resume(t).unwrap();
            assert_ne!(lost, again);
            assert_eq!(lost.parent, again.parent, "siblings");
            let (used, other) = if keep_first {
                (lost, again)
            } else {
                (again, lost)
            };
            let next = d.resume(used).unwrap();
            // The sibling never used is now rotated out, and so is the head before it.
            assert_eq!(d.resume(other), Err(Verdict::Reuse));
            assert_eq!(d.resume(t), Err(Verdict::Reuse));
            assert_eq!(judge(&d.rec, next, d.now, GRACE), Verdict::Rotate);
        }
    }

    #[test]
    fn the_grace_ends_with_time_and_does_not_restart_on_each_use() {
        let mut d = Device::default();
        let t = {
            let l = d.login();
            d.resume(l).unwrap()
        };
        d.resume(t).unwrap();
        d.now += GRACE / 2;
        d.resume(t).unwrap();
        d.now += GRACE / 2;
        assert_eq!(judge(&d.rec, t, d.now, GRACE), Verdict::Reuse);
    }

    #[test]
    fn two_holders_of_one_token_are_caught_at_the_latest_on_their_second_turns() {
        // A thief copied t. Whoever comes second gets a sibling (the grace); the first
        // sibling used rotates the other out.
        let mut d = Device::default();
        let t = {
            let l = d.login();
            d.resume(l).unwrap()
        };
        let a = d.resume(t).unwrap();
        let b = d.resume(t).unwrap();
        let a2 = d.resume(a).unwrap();
        assert_eq!(d.resume(b), Err(Verdict::Reuse));
        // Lockstep alternation does not slip through either: b's chain cannot continue.
        assert_eq!(judge(&d.rec, a2, d.now, GRACE), Verdict::Rotate);
    }

    #[test]
    fn a_login_token_survives_resumes_of_the_older_chain_until_something_newer_is_used() {
        // A Login and a Resume of the older chain race: either answer must work next.
        let mut d = Device::default();
        let t = {
            let l = d.login();
            d.resume(l).unwrap()
        };
        let l = d.login();
        let r = d.resume(t).unwrap();
        assert_eq!(judge(&d.rec, l, d.now, GRACE), Verdict::Rotate);
        assert_eq!(judge(&d.rec, r, d.now, GRACE), Verdict::Rotate);
        // The login token is used: the older chain is rotated out.
        d.resume(l).unwrap();
        assert_eq!(d.resume(r), Err(Verdict::Reuse));

        // The older chain is used after the Login: the newer answer (r2) rotates l out.
        let mut d = Device::default();
        let t = {
            let l = d.login();
            d.resume(l).unwrap()
        };
        let l = d.login();
        let r = d.resume(t).unwrap();
        let r2 = d.resume(r).unwrap();
        assert!(r2.gen > l.gen);
        assert_eq!(judge(&d.rec, l, d.now, GRACE), Verdict::Reuse);
        // Two logins in a row: the older one loses once the newer is used.
        let l1 = d.login();
        let l2 = d.login();
        d.resume(l2).unwrap();
        assert_eq!(judge(&d.rec, l1, d.now, GRACE), Verdict::Reuse);
    }

    #[test]
    fn a_token_from_before_rotation_is_taken_once() {
        let mut d = Device::default();
        let old = Place { gen: 0, parent: 0 };
        let t = d.resume(old).unwrap();
        assert!(t.gen > 0 && t.parent > 0);
        assert_eq!(d.resume(old), Err(Verdict::Reuse));
        d.resume(t).unwrap();
    }
}
