//! A minimal DER reader: just enough X.509 to find the SubjectPublicKeyInfo
//! and the Basic Constraints CA flag of a certificate.
//!
//! Identities are computed on every new connection from bytes the peer
//! chose, so this is written to reject, never to panic, on any input.

/// One DER element: its tag, the whole encoding, and the content octets.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tlv<'a> {
    pub tag: u8,
    pub raw: &'a [u8],
    pub content: &'a [u8],
}

/// Reads one element from the front of `input`, returning it and the rest.
pub(crate) fn read_tlv(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // high tag numbers do not occur in certificates
    }
    let (&len0, mut rest) = rest.split_first()?;
    let len = if len0 < 0x80 {
        usize::from(len0)
    } else {
        let n = usize::from(len0 & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in rest.get(..n)? {
            len = (len << 8) | usize::from(b);
        }
        rest = rest.get(n..)?;
        len
    };
    let content = rest.get(..len)?;
    let header = input.len() - rest.len();
    let raw = input.get(..header + len)?;
    Some((Tlv { tag, raw, content }, rest.get(len..)?))
}

/// Iterates over the elements of a constructed value's content.
pub(crate) fn children(mut content: &[u8]) -> impl Iterator<Item = Option<Tlv<'_>>> {
    std::iter::from_fn(move || {
        if content.is_empty() {
            return None;
        }
        match read_tlv(content) {
            Some((tlv, rest)) => {
                content = rest;
                Some(Some(tlv))
            }
            None => {
                content = &[];
                Some(None)
            }
        }
    })
}

const SEQUENCE: u8 = 0x30;
const BASIC_CONSTRAINTS_OID: &[u8] = &[0x55, 0x1d, 0x13];

/// The parts of a certificate that identity computation needs.
#[derive(Debug)]
pub(crate) struct CertInfo<'a> {
    pub spki: &'a [u8],
    pub is_ca: bool,
}

/// Extracts the DER SubjectPublicKeyInfo and the CA flag from a certificate.
pub(crate) fn parse_certificate(der: &[u8]) -> Option<CertInfo<'_>> {
    let (cert, rest) = read_tlv(der)?;
    if cert.tag != SEQUENCE || !rest.is_empty() {
        return None;
    }
    let (tbs, _) = read_tlv(cert.content)?;
    if tbs.tag != SEQUENCE {
        return None;
    }
    let mut fields = children(tbs.content);
    let mut next = fields.next()??;
    if next.tag == 0xa0 {
        next = fields.next()??; // explicit version
    }
    // next is serialNumber; then signature, issuer, validity, subject, spki.
    if next.tag != 0x02 {
        return None;
    }
    for _ in 0..4 {
        let f = fields.next()??;
        if f.tag != SEQUENCE {
            return None;
        }
    }
    let spki = fields.next()??;
    if spki.tag != SEQUENCE {
        return None;
    }
    let mut is_ca = false;
    for f in fields {
        let f = f?;
        if f.tag == 0xa3 {
            is_ca = basic_constraints_ca(f.content)?;
        }
    }
    Some(CertInfo { spki: spki.raw, is_ca })
}

fn basic_constraints_ca(explicit: &[u8]) -> Option<bool> {
    let (exts, _) = read_tlv(explicit)?;
    if exts.tag != SEQUENCE {
        return None;
    }
    for ext in children(exts.content) {
        let ext = ext?;
        let mut parts = children(ext.content);
        let oid = parts.next()??;
        if oid.tag != 0x06 || oid.content != BASIC_CONSTRAINTS_OID {
            continue;
        }
        let mut value = parts.next()??;
        if value.tag == 0x01 {
            value = parts.next()??; // critical flag
        }
        if value.tag != 0x04 {
            return None;
        }
        let (bc, _) = read_tlv(value.content)?;
        if bc.tag != SEQUENCE {
            return None;
        }
        return Some(match children(bc.content).next() {
            Some(Some(b)) if b.tag == 0x01 => b.content.first().is_some_and(|&v| v != 0),
            _ => false,
        });
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_rejected_not_panicking() {
        for input in [&[][..], &[0x30], &[0x30, 0x82, 0xff], &[0x30, 0x85, 1, 1, 1, 1, 1]] {
            assert!(parse_certificate(input).is_none());
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = parse_certificate(&bytes);
        }
    }
}
