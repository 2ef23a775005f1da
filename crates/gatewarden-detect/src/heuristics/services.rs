//! Which ports are which services, as the detectors see them: auth services
//! (connection-rate brute force), interactive logins (session brute force),
//! plain-HTTP web interfaces (web-login guessing, slow HTTP), and how many
//! bytes a packet without payload takes.

use std::net::IpAddr;

/// Ports whose repeated connection attempts mean password guessing.
pub const AUTH_PORTS: [u16; 10] = [21, 22, 23, 2222, 2323, 1883, 8883, 3389, 5900, 110];
/// Interactive login services: a person opens one session, a password
/// guesser opens several (hydra keeps each for a few tries, then reconnects).
/// MQTT is not here: telemetry reconnects every few seconds by design.
pub const LOGIN_PORTS: [u16; 8] = [21, 22, 23, 2222, 2323, 3389, 5900, 110];
/// Plain-HTTP ports of web interfaces (device admin pages, cloud APIs). HTTPS is
/// left out: a TLS handshake alone sends the certificate chain, so "a small
/// reply" would need another bound there.
pub const WEB_PORTS: [u16; 6] = [80, 81, 8000, 8008, 8080, 8888];

/// A readable name for an auth port.
pub fn service_name(port: u16) -> &'static str {
    match port {
        21 => "FTP",
        22 | 2222 => "SSH",
        23 | 2323 => "telnet",
        1883 | 8883 => "MQTT",
        3389 => "RDP",
        5900 => "VNC",
        110 => "POP3",
        _ => "auth service",
    }
}

/// Most IP bytes a TCP packet without payload takes: 20 (IPv4) or 40 (IPv6)
/// bytes of IP header and a TCP header with options (SYN-ACK: 40). A flow whose
/// bytes stay within this times its packets has carried no data that way.
pub(super) fn header_bytes(addr: IpAddr) -> u64 {
    if addr.is_ipv4() {
        60
    } else {
        80
    }
}
