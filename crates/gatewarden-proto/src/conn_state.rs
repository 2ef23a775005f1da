//! TCP connection state in Zeek's `conn_state` terms, derived from a compact
//! history of which side sent which flags.

/// Bits of a flow's TCP history.
pub mod history {
    /// Originator sent a SYN without ACK.
    pub const ORIG_SYN: u16 = 1 << 0;
    /// Responder sent SYN+ACK.
    pub const RESP_SYNACK: u16 = 1 << 1;
    /// Originator sent an ACK after the responder's SYN+ACK.
    pub const ORIG_ACK: u16 = 1 << 2;
    /// Originator sent a FIN.
    pub const ORIG_FIN: u16 = 1 << 3;
    /// Responder sent a FIN.
    pub const RESP_FIN: u16 = 1 << 4;
    /// Originator sent a RST.
    pub const ORIG_RST: u16 = 1 << 5;
    /// Responder sent a RST.
    pub const RESP_RST: u16 = 1 << 6;
    /// Originator sent payload.
    pub const ORIG_DATA: u16 = 1 << 7;
    /// Responder sent payload.
    pub const RESP_DATA: u16 = 1 << 8;
    /// Responder sent a SYN without ACK (simultaneous open or reversed capture).
    pub const RESP_SYN: u16 = 1 << 9;
    /// The flow knows the responder's sequence range (`Flow::resp_seq_lo..resp_seq_next`).
    pub const RESP_SEQ: u16 = 1 << 10;
    /// The originator acknowledged a sequence number the responder sent it: it
    /// receives at its address (a forged source never sees the numbers).
    pub const ORIG_ANSWERED: u16 = 1 << 11;
}

/// Zeek's connection states; see Zeek's `conn.log` documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum ConnState {
    /// Attempt seen, no reply.
    S0,
    /// Established, not terminated.
    S1,
    /// Normal establishment and termination.
    SF,
    /// Attempt rejected (RST answered the SYN).
    REJ,
    /// Established, originator's close seen, no reply.
    S2,
    /// Established, responder's close seen, no reply.
    S3,
    /// Established, originator aborted with RST.
    RSTO,
    /// Established, responder aborted with RST.
    RSTR,
    /// Originator sent SYN then RST, no SYN-ACK seen.
    RSTOS0,
    /// Responder sent SYN-ACK then RST, no SYN seen.
    RSTRH,
    /// Originator sent SYN then FIN, no SYN-ACK (half-open).
    SH,
    /// Responder sent SYN-ACK then FIN, no SYN seen.
    SHR,
    /// No SYN seen: midstream traffic.
    OTH,
}

impl ConnState {
    /// Every state, in a fixed order (the feature schema one-hot encodes in this order).
    pub const ALL: [ConnState; 13] = [
        ConnState::S0,
        ConnState::S1,
        ConnState::SF,
        ConnState::REJ,
        ConnState::S2,
        ConnState::S3,
        ConnState::RSTO,
        ConnState::RSTR,
        ConnState::RSTOS0,
        ConnState::RSTRH,
        ConnState::SH,
        ConnState::SHR,
        ConnState::OTH,
    ];

    /// Zeek's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnState::S0 => "S0",
            ConnState::S1 => "S1",
            ConnState::SF => "SF",
            ConnState::REJ => "REJ",
            ConnState::S2 => "S2",
            ConnState::S3 => "S3",
            ConnState::RSTO => "RSTO",
            ConnState::RSTR => "RSTR",
            ConnState::RSTOS0 => "RSTOS0",
            ConnState::RSTRH => "RSTRH",
            ConnState::SH => "SH",
            ConnState::SHR => "SHR",
            ConnState::OTH => "OTH",
        }
    }

    /// Parses Zeek's spelling.
    pub fn parse(s: &str) -> Option<ConnState> {
        ConnState::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Whether the connection attempt failed (no established session).
    pub fn is_failed_attempt(self) -> bool {
        matches!(self, ConnState::S0 | ConnState::REJ | ConnState::RSTOS0 | ConnState::SH)
    }

    /// State of a TCP flow from its history bits.
    pub fn from_tcp_history(h: u16) -> ConnState {
        use history::*;
        let has = |bit| h & bit != 0;
        let syn = has(ORIG_SYN);
        let synack = has(RESP_SYNACK);
        match (syn, synack) {
            (true, false) => {
                if has(RESP_RST) {
                    ConnState::REJ
                } else if has(ORIG_RST) {
                    ConnState::RSTOS0
                } else if has(ORIG_FIN) {
                    ConnState::SH
                } else {
                    ConnState::S0
                }
            }
            (false, true) => {
                if has(RESP_RST) {
                    ConnState::RSTRH
                } else if has(RESP_FIN) {
                    ConnState::SHR
                } else {
                    ConnState::OTH
                }
            }
            (false, false) => ConnState::OTH,
            (true, true) => {
                if has(ORIG_RST) {
                    ConnState::RSTO
                } else if has(RESP_RST) {
                    ConnState::RSTR
                } else if has(ORIG_FIN) && has(RESP_FIN) {
                    ConnState::SF
                } else if has(ORIG_FIN) {
                    ConnState::S2
                } else if has(RESP_FIN) {
                    ConnState::S3
                } else {
                    ConnState::S1
                }
            }
        }
    }

    /// State of a non-TCP flow: answered or not.
    pub fn from_reply(replied: bool) -> ConnState {
        if replied {
            ConnState::SF
        } else {
            ConnState::S0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::history::*;
    use super::*;

    #[test]
    fn zeek_states_from_histories() {
        let cases = [
            (ORIG_SYN, ConnState::S0),
            (ORIG_SYN | RESP_RST, ConnState::REJ),
            (ORIG_SYN | ORIG_RST, ConnState::RSTOS0),
            (ORIG_SYN | ORIG_FIN, ConnState::SH),
            (RESP_SYNACK | RESP_RST, ConnState::RSTRH),
            (RESP_SYNACK | RESP_FIN, ConnState::SHR),
            (RESP_SYNACK, ConnState::OTH),
            (ORIG_DATA, ConnState::OTH),
            (ORIG_SYN | RESP_SYNACK | ORIG_ACK, ConnState::S1),
            (ORIG_SYN | RESP_SYNACK | ORIG_FIN | RESP_FIN, ConnState::SF),
            (ORIG_SYN | RESP_SYNACK | ORIG_FIN, ConnState::S2),
            (ORIG_SYN | RESP_SYNACK | RESP_FIN, ConnState::S3),
            (ORIG_SYN | RESP_SYNACK | ORIG_RST, ConnState::RSTO),
            (ORIG_SYN | RESP_SYNACK | RESP_RST, ConnState::RSTR),
        ];
        for (h, want) in cases {
            assert_eq!(ConnState::from_tcp_history(h), want, "history {h:#b}");
        }
    }

    #[test]
    fn names_round_trip() {
        for s in ConnState::ALL {
            assert_eq!(ConnState::parse(s.as_str()), Some(s));
        }
        assert_eq!(ConnState::parse("XX"), None);
    }

    #[test]
    fn failed_attempts() {
        assert!(ConnState::S0.is_failed_attempt() && ConnState::REJ.is_failed_attempt());
        assert!(!ConnState::SF.is_failed_attempt() && !ConnState::S1.is_failed_attempt());
    }
}
