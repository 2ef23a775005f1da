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
