//! The common name of a certificate's subject, by a short walk of its DER: the few lines below
//! replace a full X.509 parser (and its dependencies) for the one field the auth layer maps to
//! a user. The certificate has already been verified by rustls when this runs; a certificate
//! this walk cannot follow simply has no name.
//!
//! ```text
//!  Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
//!  tbsCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber, signature,
//!                                issuer Name, validity, subject Name, ... }
//!  Name ::= SEQUENCE OF SET OF SEQUENCE { type OID, value ANY }   -- CN: OID 2.5.4.3
//! ```

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const VERSION: u8 = 0xa0;
/// 2.5.4.3, id-at-commonName.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// The string types a name is written in: UTF8String, PrintableString, TeletexString,
/// IA5String (BMPString and UniversalString are left out: no certificate tool writes them now).
const STRINGS: [u8; 4] = [0x0c, 0x13, 0x14, 0x16];

/// The subject's common name (the last one, as the most specific, when there are several).
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, certificate, _) = element(der)?;
    let (tag, mut tbs, _) = element(certificate)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut fields = Vec::with_capacity(6);
    while !tbs.is_empty() && fields.len() < 6 {
        let (tag, _, rest) = element(tbs)?;
        if fields.is_empty() && tag == VERSION {
            tbs = rest;
            continue;
        }
        fields.push(&tbs[..tbs.len() - rest.len()]);
        tbs = rest;
    }
    // serialNumber, signature, issuer, validity, subject.
    let (tag, mut name, _) = element(fields.get(4)?)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut found = None;
    while !name.is_empty() {
        let (tag, mut set, rest) = element(name)?;
        name = rest;
        if tag != SET {
            return None;
        }
        while !set.is_empty() {
            let (_, pair, rest) = element(set)?;
            set = rest;
            let (tag, oid, value) = element(pair)?;
            let (value_tag, value, _) = element(value)?;
            if tag == OID && oid == COMMON_NAME && STRINGS.contains(&value_tag) {
                found = Some(String::from_utf8_lossy(value).into_owned());
            }
        }
    }
    found
}

/// The first element of `der`: its tag, its contents, and what follows it. `None` when it runs
/// past the end or uses a form DER does not allow (indefinite lengths, lengths over 4 bytes).
fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count].iter().fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}
