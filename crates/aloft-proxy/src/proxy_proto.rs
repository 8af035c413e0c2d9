//! PROXY protocol headers (HAProxy spec, v1 text and v2 binary) prepended to upstream
//! connections so the app learns the client's address.

use std::net::SocketAddr;

use crate::options::ProxyProtoVersion;

/// The header announcing a TCP connection from `client` to `local`.
pub fn header(version: ProxyProtoVersion, client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    // Mixed families cannot be expressed: map both to IPv6 then.
    let (client, local) = match (client, local) {
        (SocketAddr::V4(_), SocketAddr::V6(_)) | (SocketAddr::V6(_), SocketAddr::V4(_)) => {
            (to_v6(client), to_v6(local))
        }
        pair => pair,
    };
    match version {
        ProxyProtoVersion::V1 => {
            let fam = if client.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {fam} {} {} {} {}\r\n",
                client.ip(),
                local.ip(),
                client.port(),
                local.port()
            )
            .into_bytes()
        }
        ProxyProtoVersion::V2 => {
            let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
            out.push(0x21); // version 2, PROXY command
            match (client, local) {
                (SocketAddr::V4(c), SocketAddr::V4(l)) => {
                    out.push(0x11); // AF_INET, STREAM
                    out.extend_from_slice(&12u16.to_be_bytes());
                    out.extend_from_slice(&c.ip().octets());
                    out.extend_from_slice(&l.ip().octets());
                }
                (SocketAddr::V6(c), SocketAddr::V6(l)) => {
                    out.push(0x21); // AF_INET6, STREAM
                    out.extend_from_slice(&36u16.to_be_bytes());
                    out.extend_from_slice(&c.ip().octets());
                    out.extend_from_slice(&l.ip().octets());
                }
                _ => unreachable!("families were unified above"),
            }
            out.extend_from_slice(&client.port().to_be_bytes());
            out.extend_from_slice(&local.port().to_be_bytes());
            out
        }
    }
}

fn to_v6(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        v6 => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_text() {
        let h = header(
            ProxyProtoVersion::V1,
            "10.0.0.1:5000".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
        );
        assert_eq!(h, b"PROXY TCP4 10.0.0.1 10.0.0.2 5000 80\r\n");
    }

    #[test]
    fn v2_binary_ipv4() {
        let h = header(
            ProxyProtoVersion::V2,
            "1.2.3.4:258".parse().unwrap(),
            "5.6.7.8:80".parse().unwrap(),
        );
        assert_eq!(&h[..12], b"\r\n\r\n\0\r\nQUIT\n");
        assert_eq!(&h[12..16], &[0x21, 0x11, 0, 12]);
        assert_eq!(&h[16..20], &[1, 2, 3, 4]);
        assert_eq!(&h[20..24], &[5, 6, 7, 8]);
        assert_eq!(&h[24..28], &[1, 2, 0, 80]);
        assert_eq!(h.len(), 28);
    }

    #[test]
    fn mixed_families_become_v6() {
        let h = header(
            ProxyProtoVersion::V1,
            "1.2.3.4:1".parse().unwrap(),
            "[::1]:80".parse().unwrap(),
        );
        assert_eq!(
            String::from_utf8(h).unwrap(),
            "PROXY TCP6 ::ffff:1.2.3.4 ::1 1 80\r\n"
        );
    }
}
