//! Which of Redis Cluster's 16384 hash slots a key belongs to.
//!
//! Redis Cluster routes every key by its *slot*: CRC16/XMODEM of the key,
//! modulo [`SLOT_COUNT`]. Each slot is served by exactly one primary at a time,
//! so the slot decides which node a lock command must go to.
//!
//! A *hash tag* lets several keys share a slot: if the key contains a `{`, and
//! a `}` somewhere after the **first** `{`, and at least one byte lies between
//! them, only the bytes between that first `{` and the first `}` after it are
//! hashed. Otherwise the whole key is hashed. So `{user1000}.following` and
//! `{user1000}.followers` share a slot, while `foo{}{bar}` hashes as a whole
//! (the first braces are empty).
//!
//! [`slot_tag`] goes the other way: a short tag whose slot is a given slot,
//! for per-slot keys such as fencing counters (`fence:{<tag>}` lives in that
//! slot).
//!
//! ```
//! use shardlock::slot::{key_slot, slot_tag};
//!
//! assert_eq!(key_slot(b"foo"), 12182);
//! assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"{user1000}.followers"));
//! assert_eq!(key_slot(b"foo{}{bar}"), 8363); // empty first tag: whole key hashed
//!
//! let tag = slot_tag(12182);
//! assert_eq!(key_slot(format!("fence:{{{tag}}}").as_bytes()), 12182);
//! ```

use std::sync::OnceLock;

/// The number of hash slots in a Redis Cluster; slots are `0..SLOT_COUNT`.
pub const SLOT_COUNT: u16 = 16384;

/// The slot of `key` under Redis Cluster's hash-tag rule (see the module docs).
///
/// Allocation-free and linear in the key length; this is on every command's
/// path.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(hashed_part(key)) % SLOT_COUNT
}

/// The bytes of `key` that Redis hashes: the first non-empty hash tag, or the
/// whole key.
fn hashed_part(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&b| b == b'{') else {
        return key;
    };
    let after = &key[open + 1..];
    match after.iter().position(|&b| b == b'}') {
        Some(close) if close > 0 => &after[..close],
        _ => key,
    }
}

/// A short ASCII-alphanumeric hash tag whose slot is `slot`: the key
/// `"{" + slot_tag(slot) + "}"`, and any key containing it as its first hash
/// tag, hashes to `slot`.
///
/// Tags are at most 3 bytes. The table is built once, on first use, by trying
/// tags in order of length (then in ASCII order) and keeping the first one
/// found for each slot, so tags are stable across releases and processes.
///
/// # Panics
///
/// If `slot >= SLOT_COUNT`: that is not a slot, and asking for it is a bug in
/// the caller.
pub fn slot_tag(slot: u16) -> &'static str {
    assert!(
        slot < SLOT_COUNT,
        "slot_tag: {slot} is not a Redis Cluster slot (slots are 0..{SLOT_COUNT})"
    );
    let table = TAGS.get_or_init(TagTable::build);
    let start = table.offsets[usize::from(slot)] as usize;
    let end = table.offsets[usize::from(slot) + 1] as usize;
    &table.text[start..end]
}

static TAGS: OnceLock<TagTable> = OnceLock::new();

/// All tags concatenated in slot order; tag `s` is
/// `text[offsets[s]..offsets[s + 1]]`.
struct TagTable {
    text: String,
    offsets: Box<[u32]>,
}

/// Tag characters, in ASCII order.
const TAG_ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

impl TagTable {
    fn build() -> TagTable {
        let mut found: Vec<Option<Vec<u8>>> = vec![None; usize::from(SLOT_COUNT)];
        let mut missing = found.len();
        // Length 3 already covers every slot; the loop does not rely on it.
        let mut len = 1;
        while missing > 0 {
            let mut candidate = vec![0u8; len];
            for mut n in 0..TAG_ALPHABET.len().pow(len as u32) {
                // Write n in base 62, most significant digit first.
                for byte in candidate.iter_mut().rev() {
                    *byte = TAG_ALPHABET[n % TAG_ALPHABET.len()];
                    n /= TAG_ALPHABET.len();
                }
                let slot = &mut found[usize::from(key_slot(&candidate))];
                if slot.is_none() {
                    *slot = Some(candidate.clone());
                    missing -= 1;
                    if missing == 0 {
                        break;
                    }
                }
            }
            len += 1;
        }
        let mut text = String::with_capacity(found.len() * 3);
        let mut offsets = Vec::with_capacity(found.len() + 1);
        offsets.push(0u32);
        for tag in found.into_iter().flatten() {
            text.extend(tag.into_iter().map(char::from));
            offsets.push(u32::try_from(text.len()).unwrap_or(u32::MAX));
        }
        TagTable {
            text,
            offsets: offsets.into_boxed_slice(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Every expected slot below was read from a Redis 7.0.15 server with
    // `CLUSTER KEYSLOT` (binary keys sent as raw RESP bulk strings), not
    // computed by this module.

    /// The examples from the Redis Cluster specification, and the well-known
    /// CRC16 check value, give the slots Redis gives.
    #[test]
    fn redis_spec_examples() {
        let cases: &[(&[u8], u16)] = &[
            (b"{user1000}.following", 3443),
            (b"{user1000}.followers", 3443),
            (b"user1000", 3443),
            (b"foo{}{bar}", 8363),
            (b"foo{{bar}}zap", 4015),
            (b"{bar", 4015),
            (b"foo{bar}{zap}", 5061),
            (b"bar", 5061),
            (b"foo", 12182),
            // CRC16/XMODEM("123456789") = 0x31C3 = 12739 < 16384.
            (b"123456789", 0x31C3 % SLOT_COUNT),
            (b"123456789", 12739),
        ];
        for &(key, slot) in cases {
            assert_eq!(
                key_slot(key),
                slot,
                "key {:?}",
                key.escape_ascii().to_string()
            );
        }
    }

    /// Edge cases of the hash-tag rule match Redis: empty first tag, nested
    /// and repeated braces, unmatched braces, the empty key.
    #[test]
    fn hash_tag_edge_cases() {
        let cases: &[(&[u8], u16)] = &[
            (b"{}", 15257),     // empty tag: whole key
            (b"{}{a}", 13650),  // first tag empty: whole key, not "a"
            (b"{{a}}", 10276),  // hashes "{a"
            (b"{a", 10276),     // no closing brace: whole key, which is "{a"
            (b"a{b}{c}", 3300), // first tag only: "b"
            (b"b", 3300),
            (b"}{a}", 15495), // a '}' before the first '{' does not count: "a"
            (b"a", 15495),
            (b"a}", 5921), // no '{': whole key
            (b"", 0),
        ];
        for &(key, slot) in cases {
            assert_eq!(
                key_slot(key),
                slot,
                "key {:?}",
                key.escape_ascii().to_string()
            );
        }
        assert_eq!(key_slot(b"{{a}}"), key_slot(b"{a"));
        assert_eq!(key_slot(b"a{b}{c}"), key_slot(b"b"));
    }

    /// Keys are bytes: NUL, 0xff and invalid UTF-8 hash like Redis hashes them.
    #[test]
    fn binary_keys() {
        let cases: &[(&[u8], u16)] = &[
            (b"\x00", 0),
            (b"\xff", 7920),
            (b"\x00\xff\x80", 4727),
            (b"{\x00}rest", 0),
            (b"\xc3\x28", 9837), // invalid UTF-8
            (b"x{\xff\xfe}y", 3374),
            (b"\xfe\xff", 11838),
        ];
        for &(key, slot) in cases {
            assert_eq!(
                key_slot(key),
                slot,
                "key {:?}",
                key.escape_ascii().to_string()
            );
        }
        assert_eq!(key_slot(b"x{\xff\xfe}y"), key_slot(b"\xff\xfe"));
    }

    /// A 1 MiB key hashes like Redis, with and without a tag at its start, and
    /// with an unmatched '{' at its very end.
    #[test]
    fn one_mebibyte_keys() {
        const MIB: usize = 1 << 20;
        let plain = vec![b'x'; MIB];
        assert_eq!(key_slot(&plain), 1576);

        let mut tagged = b"{t}".to_vec();
        tagged.resize(MIB, b'x');
        assert_eq!(key_slot(&tagged), 15891);
        assert_eq!(key_slot(b"t"), 15891);

        let mut open_at_end = vec![b'x'; MIB - 1];
        open_at_end.push(b'{');
        assert_eq!(key_slot(&open_at_end), 13899);
    }

    /// Every slot has a tag of at most 3 alphanumeric bytes, and `{tag}` hashes
    /// to that slot.
    #[test]
    fn every_slot_has_a_short_tag() {
        for slot in 0..SLOT_COUNT {
            let tag = slot_tag(slot);
            assert!((1..=3).contains(&tag.len()), "slot {slot}: tag {tag:?}");
            assert!(
                tag.bytes().all(|b| b.is_ascii_alphanumeric()),
                "slot {slot}: tag {tag:?}"
            );
            assert_eq!(
                key_slot(format!("{{{tag}}}").as_bytes()),
                slot,
                "tag {tag:?}"
            );
            assert_eq!(key_slot(format!("fence:{{{tag}}}:x").as_bytes()), slot);
        }
    }

    /// The table keeps the first tag in order of length then ASCII order, so
    /// single-character tags map to their own slots.
    #[test]
    fn tags_are_the_first_found() {
        // "a" hashes to 15495 and "b" to 3300 (CLUSTER KEYSLOT above); no
        // shorter tag exists, and "0".."9", "A".."Z" come first in ASCII order
        // but have other slots.
        assert_eq!(slot_tag(15495), "a");
        assert_eq!(slot_tag(3300), "b");
    }

    /// Asking for the tag of a non-slot is a programmer error and panics with
    /// a message that says so.
    #[test]
    #[should_panic(expected = "not a Redis Cluster slot")]
    fn slot_tag_rejects_non_slots() {
        let _ = slot_tag(SLOT_COUNT);
    }
}

#[cfg(test)]
#[path = "slot_props.rs"]
mod props;
