//! Values Kubernetes puts into object metadata: version-4 UUIDs
//! for `metadata.uid` and the random suffix of `generateName`, for the write
//! path and the controllers alike (timestamps: `crate::time`).

/// A random RFC 4122 version-4 UUID, as Kubernetes uses for `metadata.uid`.
pub fn new_uid() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut uid = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            uid.push('-');
        }
        uid.push(HEX[usize::from(byte >> 4)] as char);
        uid.push(HEX[usize::from(byte & 0x0f)] as char);
    }
    uid
}

/// Five characters from Kubernetes' generateName alphabet (no vowels, no
/// look-alike digits, so no words appear by accident).
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_version_4_uuids_in_lowercase_hex() {
        for _ in 0..1000 {
            let uid = new_uid();
            let groups: Vec<&str> = uid.split('-').collect();
            assert_eq!(
                groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12],
                "{uid}"
            );
            assert!(
                groups
                    .iter()
                    .all(|g| g.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))),
                "{uid}"
            );
            assert_eq!(&groups[2][..1], "4", "version nibble of {uid}");
            assert!(
                matches!(&groups[3][..1], "8" | "9" | "a" | "b"),
                "variant bits of {uid}"
            );
        }
    }

    #[test]
    fn uids_differ() {
        let uids: std::collections::HashSet<String> = (0..1000).map(|_| new_uid()).collect();
        assert_eq!(uids.len(), 1000);
    }

    #[test]
    fn suffixes_are_five_characters_of_the_alphabet() {
        for _ in 0..1000 {
            let suffix = random_suffix();
            assert_eq!(suffix.len(), 5);
            assert!(suffix
                .bytes()
                .all(|c| b"bcdfghjklmnpqrstvwxz2456789".contains(&c)));
        }
    }
}
