//! The wall clock as every layer reads it: Unix time in s, ms and ns, and the
//! RFC 3339 text alerts and logs carry.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest a replay paced to its capture's clock waits for the next frame. A
/// longer pause in the capture is shortened to this, with a warning (as
/// tcpreplay's `--maxsleep`): a quiet hour is seldom worth waiting out, and a
/// corrupt or crafted timestamp (the year 2100) would otherwise have the
/// replay sleep for decades.
pub const MAX_REALTIME_WAIT: Duration = Duration::from_secs(10);

/// Unix time now in seconds (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Unix time now in milliseconds.
pub fn unix_now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Unix time now in nanoseconds.
pub fn unix_now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// "Now" for a live capture loop, without a clock read per frame (two
/// reads a frame were a tenth of the capture thread's time at 50 k frames/s).
/// The system clock is read on a turn without a frame and on every
/// [`FrameClock::READ_EVERY`]th frame; in between, the frame's kernel receive
/// timestamp (Unix ns, the same clock, delivered within the ring's block
/// timeout) stands in, never going back before the last read.
#[derive(Debug, Default)]
pub struct FrameClock {
    frames: u32,
    read_ns: u64,
}

/// One turn's time from [`FrameClock::now`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopNow {
    /// Unix ns.
    pub ns: u64,
    /// Whether `ns` was read from the system clock this turn (a frame's lag
    /// behind it, `ns - ts`, means something only then).
    pub read: bool,
}

impl FrameClock {
    /// Frames between two reads of the system clock while frames keep coming.
    pub const READ_EVERY: u32 = 32;

    /// Now, for a loop turn that got a frame stamped `frame_ts` (`None`: the
    /// poll timed out).
    pub fn now(&mut self, frame_ts: Option<u64>) -> LoopNow {
        self.now_with(frame_ts, unix_now_ns)
    }

    fn now_with(&mut self, frame_ts: Option<u64>, clock: impl FnOnce() -> u64) -> LoopNow {
        match frame_ts {
            Some(ts) if self.read_ns != 0 && self.frames + 1 < Self::READ_EVERY => {
                self.frames += 1;
                LoopNow { ns: self.read_ns.max(ts), read: false }
            }
            _ => {
                self.frames = 0;
                self.read_ns = clock();
                LoopNow { ns: self.read_ns, read: true }
            }
        }
    }
}

/// Paces a capture's frames at their recorded spacing, for the replay
/// (`--speed realtime`) and for a router fed from a file
/// (`capture.replay_live`): one rule for both, so they cannot drift apart.
///
/// The anchor frame was fed at its clock instant, and capture time runs at
/// the pace of the clock from there. A frame due more than
/// [`MAX_REALTIME_WAIT`] ahead (a long pause, or a crafted stamp in the year
/// 2100) is fed that long after now instead; one due more than that in the
/// past (the capture's time went back, or the feeder fell behind) at once.
/// Either way the pace starts again from that frame, so the frames after a
/// jump keep their own spacing; a frame a little behind (a ring on several
/// CPUs) is fed at once without moving the anchor.
#[derive(Debug, Default, Clone)]
pub struct RealtimePacer {
    /// (capture time, clock time it was fed at), both ns.
    anchor: Option<(u64, u64)>,
}

/// How long to wait before feeding a frame, and by how much that wait was
/// shortened (to say so: a shortened pause is not silent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// How long after now the frame is due.
    pub wait: Duration,
    /// How much longer the capture's own pause was, when it was cut to the bound.
    pub shortened: Option<Duration>,
}

impl RealtimePacer {
    /// The pace for the frame recorded at `ts_ns`, with the clock (any
    /// monotonic ns count, or Unix ns) at `now_ns`.
    pub fn pace(&mut self, ts_ns: u64, now_ns: u64) -> Pace {
        let Some((anchor_ts, anchor_at)) = self.anchor else {
            self.anchor = Some((ts_ns, now_ns));
            return Pace { wait: Duration::ZERO, shortened: None };
        };
        // Signed: capture time and the clock may each go back; u64
        // nanoseconds fit an i128 with room.
        let ahead_ns = i128::from(ts_ns) - i128::from(anchor_ts) - (i128::from(now_ns) - i128::from(anchor_at));
        let bound_ns = MAX_REALTIME_WAIT.as_nanos() as i128;
        if ahead_ns > bound_ns {
            self.anchor = Some((ts_ns, now_ns.saturating_add(bound_ns as u64)));
            let shortened = Duration::from_nanos(u64::try_from(ahead_ns - bound_ns).unwrap_or(u64::MAX));
            return Pace { wait: MAX_REALTIME_WAIT, shortened: Some(shortened) };
        }
        if ahead_ns < -bound_ns {
            self.anchor = Some((ts_ns, now_ns));
        }
        Pace { wait: Duration::from_nanos(ahead_ns.max(0) as u64), shortened: None }
    }

    /// The frame the pace runs from and the clock time it was fed at.
    pub fn anchor(&self) -> Option<(u64, u64)> {
        self.anchor
    }
}

/// Formats nanoseconds since the epoch as RFC 3339 with microseconds, UTC, in
/// Suricata's timestamp shape (`2023-11-14T22:13:20.123456+0000`).
pub fn rfc3339(ns: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns)).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+0000",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Capture time `ms` milliseconds after the epoch, in nanoseconds.
    fn ms(ms: u64) -> u64 {
        ms * 1_000_000
    }

    #[test]
    fn realtime_pacing_keeps_the_recorded_spacing() {
        // Any clock: a monotonic count from the replay's start, or Unix time.
        let (mut p, t0) = (RealtimePacer::default(), 1_765_000_000_000_000_000u64);
        let at = |ms: u64| t0 + ms * 1_000_000;
        assert_eq!(p.pace(ms(100_000), at(0)).wait, Duration::ZERO, "the first frame at once");
        assert_eq!(p.pace(ms(101_000), at(0)).wait, Duration::from_secs(1));
        // Fed a second later; the next half a second after that.
        assert_eq!(p.pace(ms(101_500), at(1000)).wait, Duration::from_millis(500));
        // A frame a little behind (a ring on several CPUs) is fed at once,
        // and the ones after keep the pace.
        assert_eq!(p.pace(ms(101_400), at(1500)).wait, Duration::ZERO);
        assert_eq!(p.pace(ms(102_000), at(1500)).wait, Duration::from_millis(500));
        // A pause up to the bound is waited out, with no word.
        assert_eq!(p.pace(ms(112_000), at(2000)), Pace { wait: MAX_REALTIME_WAIT, shortened: None });
    }

    #[test]
    fn a_far_future_frame_is_waited_for_at_most_the_bound_and_the_pace_resumes_after_it() {
        // Any clock: a monotonic count from the replay's start, or Unix time.
        let (mut p, t0) = (RealtimePacer::default(), 1_765_000_000_000_000_000u64);
        let at = |ms: u64| t0 + ms * 1_000_000;
        p.pace(ms(100_000), at(0));
        // 2100-01-01T00:00:00Z: 4 102 444 700 s ahead.
        let pace = p.pace(ms(4_102_444_800_000), at(0));
        assert_eq!(pace.wait, MAX_REALTIME_WAIT);
        let shortened = pace.shortened.expect("said");
        assert_eq!(shortened, Duration::from_secs(4_102_444_800 - 100) - MAX_REALTIME_WAIT);
        // Back to the capture's own time: no wait, and its spacing from there.
        assert_eq!(p.pace(ms(100_200), at(10_000)), Pace { wait: Duration::ZERO, shortened: None });
        assert_eq!(p.pace(ms(100_300), at(10_000)).wait, Duration::from_millis(100));
        // The end of time neither overflows nor waits longer than the bound.
        let pace = p.pace(u64::MAX, at(10_100));
        assert_eq!(pace.wait, MAX_REALTIME_WAIT);
        assert!(pace.shortened.is_some_and(|d| d.as_secs() > 500 * 365 * 86_400));
        assert_eq!(p.pace(0, at(20_100)).wait, Duration::ZERO, "and back to 1970 at once");
        assert_eq!(p.pace(ms(1), at(20_100)).wait, Duration::from_millis(1));
    }

    #[test]
    fn a_frame_clock_reads_the_system_clock_when_idle_and_every_read_every_frames() {
        let mut c = FrameClock::default();
        let reads = std::cell::Cell::new(0u64);
        let clock = |t: u64| {
            reads.set(reads.get() + 1);
            t
        };
        // The first turn reads, whatever it got.
        assert_eq!(c.now_with(Some(5), || clock(100)), LoopNow { ns: 100, read: true });
        // Frames in between: their stamp when later than the last read, never earlier.
        assert_eq!(c.now_with(Some(90), || clock(0)), LoopNow { ns: 100, read: false });
        assert_eq!(c.now_with(Some(130), || clock(0)), LoopNow { ns: 130, read: false });
        for _ in 3..FrameClock::READ_EVERY {
            assert!(!c.now_with(Some(140), || clock(0)).read);
        }
        // The READ_EVERY-th frame since the read reads again; so does an idle turn.
        assert_eq!(c.now_with(Some(150), || clock(200)), LoopNow { ns: 200, read: true });
        assert_eq!(c.now_with(None, || clock(300)), LoopNow { ns: 300, read: true });
        assert_eq!(c.now_with(None, || clock(310)), LoopNow { ns: 310, read: true });
        assert_eq!(reads.get(), 4);
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000+0000");
        assert_eq!(rfc3339(1_700_000_000_123_456_789), "2023-11-14T22:13:20.123456+0000");
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00.000000+0000");
        assert_eq!(rfc3339(u64::MAX), "2554-07-21T23:34:33.709551+0000");
    }

    #[test]
    fn the_clock_is_after_2020() {
        assert!(unix_now() > 1_577_836_800);
        assert!(unix_now_ms() / 1000 >= unix_now() - 1);
    }
}
