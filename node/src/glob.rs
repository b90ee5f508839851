//! Redis-style glob matching (`*`, `?`, `[a-z]`, `[^x]`, `\` escapes), for SCAN MATCH,
//! KEYS and CONFIG GET.
//!
//! Semantics are those of Redis's `stringmatchlen` (util.c), quirks included: a range's
//! end may be `]` (`[a-]` is the range `]`..`a`), an unterminated class runs to the end
//! of the pattern, a trailing `\` is a literal backslash. The one deliberate addition is
//! Redis's own KEYS/SCAN shortcut: the pattern `*` alone matches every key, even the
//! empty one (which `stringmatchlen` never matches).
//!
//! Redis matches recursively, trying every split point at each `*`, which is exponential
//! in the number of stars (`*a*a*a*a*a*a*b` on a long key). This matcher is the classic
//! greedy one instead: remember only the last `*` and, on a mismatch, let it swallow one
//! more byte. Every token other than `*` consumes exactly one byte, which makes that
//! sound, and bounds the work by O(pattern × key) with O(1) memory.

pub fn matches(pattern: &[u8], s: &[u8]) -> bool {
    pattern == b"*" || string_match(pattern, s, false, &mut 0)
}

/// As [`matches`], ignoring ASCII case (CONFIG GET, as Redis's `nocase` matching).
pub fn matches_nocase(pattern: &[u8], s: &[u8]) -> bool {
    pattern == b"*" || string_match(pattern, s, true, &mut 0)
}

/// `matches`, also returning how many pattern tokens were tried: the work done, for
/// tests that check it stays within pattern × key.
#[cfg(test)]
pub(crate) fn matches_counting(pattern: &[u8], s: &[u8]) -> (bool, u64) {
    let mut steps = 0;
    let m = string_match(pattern, s, false, &mut steps);
    (m, steps)
}

fn fold(c: u8, nocase: bool) -> u8 {
    if nocase {
        c.to_ascii_lowercase()
    } else {
        c
    }
}

/// Does the token at `p[pi]` (not `*`) match byte `c`? Returns the answer and where the
/// next token starts.
fn token(p: &[u8], pi: usize, c: u8, nocase: bool) -> (bool, usize) {
    match p[pi] {
        b'?' => (true, pi + 1),
        b'[' => class(p, pi, c, nocase),
        b'\\' if pi + 1 < p.len() => (fold(p[pi + 1], nocase) == fold(c, nocase), pi + 2),
        other => (fold(other, nocase) == fold(c, nocase), pi + 1),
    }
}

/// A `[...]` class starting at `p[open]`, transcribed from Redis's loop so that its
/// corner cases (unterminated class, `]` as a range end) come out the same.
fn class(p: &[u8], open: usize, c: u8, nocase: bool) -> (bool, usize) {
    let c = fold(c, nocase);
    let mut i = open + 1;
    let negate = p.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut hit = false;
    loop {
        let left = p.len().saturating_sub(i);
        if left >= 2 && p[i] == b'\\' {
            i += 1;
            hit |= fold(p[i], nocase) == c;
        } else if left >= 1 && p[i] == b']' {
            break;
        } else if left == 0 {
            // Unterminated: the class ends with the pattern.
            return (hit != negate, p.len());
        } else if left >= 3 && p[i + 1] == b'-' {
            let (a, b) = (fold(p[i], nocase), fold(p[i + 2], nocase));
            let (lo, hi) = (a.min(b), a.max(b));
            hit |= (lo..=hi).contains(&c);
            i += 2;
        } else {
            hit |= fold(p[i], nocase) == c;
        }
        i += 1;
    }
    (hit != negate, i + 1)
}

fn string_match(p: &[u8], s: &[u8], nocase: bool, steps: &mut u64) -> bool {
    // Redis's loop runs only while both remain: an empty key matches only "".
    if s.is_empty() {
        return p.is_empty();
    }
    let (mut pi, mut si) = (0, 0);
    // The last `*` seen: the token after it, and where its match currently ends.
    let mut star: Option<(usize, usize)> = None;
    loop {
        if si == s.len() {
            while p.get(pi) == Some(&b'*') {
                pi += 1;
            }
            return pi == p.len();
        }
        if p.get(pi) == Some(&b'*') {
            while p.get(pi) == Some(&b'*') {
                pi += 1;
            }
            if pi == p.len() {
                return true;
            }
            star = Some((pi, si));
            continue;
        }
        *steps += 1;
        let advanced = pi < p.len() && {
            let (hit, next) = token(p, pi, s[si], nocase);
            if hit {
                pi = next;
                si += 1;
            }
            hit
        };
        if !advanced {
            // Let the last star swallow one more byte and retry what follows it.
            let Some((after_star, ends)) = star else {
                return false;
            };
            star = Some((after_star, ends + 1));
            pi = after_star;
            si = ends + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{matches, matches_counting, matches_nocase};
    use proptest::prelude::*;

    #[test]
    fn redis_glob_cases() {
        assert!(matches(b"*", b"anything"));
        assert!(matches(b"key:*", b"key:12"));
        assert!(!matches(b"key:*", b"kex:12"));
        assert!(matches(b"h?llo", b"hello"));
        assert!(matches(b"h[ae]llo", b"hallo"));
        assert!(!matches(b"h[^e]llo", b"hello"));
        assert!(matches(b"h[a-b]llo", b"hbllo"));
        assert!(matches(b"a\\*b", b"a*b"));
        assert!(!matches(b"a\\*b", b"axb"));
        assert!(matches(b"*a*b*c", b"xxaxxbxxc"));
        assert!(!matches(b"*a*b*c", b"xxaxxbxx"));
    }

    #[test]
    fn redis_corner_cases() {
        // Reversed ranges are swapped; `]` can end a range; unterminated classes run
        // to the end of the pattern; a trailing backslash is literal.
        assert!(matches(b"[z-a]", b"m"));
        assert!(matches(b"[a-]", b"^"));
        assert!(matches(b"[abc", b"b"));
        assert!(!matches(b"[]", b"]"));
        assert!(matches(b"[^]", b"x"));
        assert!(matches(b"a\\", b"a\\"));
        assert!(matches(b"[\\]]", b"]"));
        // "" matches only "", except for the KEYS/SCAN `*` shortcut.
        assert!(matches(b"*", b""));
        assert!(!matches(b"**", b""));
        assert!(matches(b"", b""));
        assert!(matches_nocase(b"MAX[A-Z]*", b"maxmemory"));
        assert!(!matches(b"MAX*", b"maxmemory"));
    }

    /// The case that took Redis-style recursion minutes: 30 stars against 60 bytes
    /// that almost match. Counted work stays within pattern × key.
    #[test]
    fn many_stars_are_linear() {
        let pattern = [&b"*a".repeat(30)[..], b"*b"].concat();
        let key = vec![b'a'; 60];
        let (hit, steps) = matches_counting(&pattern, &key);
        assert!(!hit);
        let bound = ((pattern.len() + 1) * (key.len() + 1)) as u64;
        assert!(steps <= bound, "{steps} steps > {bound}");
        let mut matching = key.clone();
        matching.push(b'b');
        assert!(matches(&pattern, &matching));
    }

    /// Redis's `stringmatchlen`, transcribed: exponential, fine on short inputs.
    fn reference(p: &[u8], s: &[u8]) -> bool {
        fn at(p: &[u8], i: usize) -> u8 {
            p.get(i).copied().unwrap_or(0)
        }
        fn rec(p: &[u8], mut s: &[u8]) -> bool {
            let mut pi = 0;
            while pi < p.len() && !s.is_empty() {
                match p[pi] {
                    b'*' => {
                        while pi + 1 < p.len() && p[pi + 1] == b'*' {
                            pi += 1;
                        }
                        if pi + 1 == p.len() {
                            return true;
                        }
                        while !s.is_empty() {
                            if rec(&p[pi + 1..], s) {
                                return true;
                            }
                            s = &s[1..];
                        }
                        return false;
                    }
                    b'?' => s = &s[1..],
                    b'[' => {
                        pi += 1;
                        let not = at(p, pi) == b'^';
                        if not {
                            pi += 1;
                        }
                        let mut hit = false;
                        loop {
                            let left = p.len() as isize - pi as isize;
                            if at(p, pi) == b'\\' && left >= 2 {
                                pi += 1;
                                hit |= p[pi] == s[0];
                            } else if at(p, pi) == b']' && left >= 1 {
                                break;
                            } else if left <= 0 {
                                pi -= 1;
                                break;
                            } else if left >= 3 && p[pi + 1] == b'-' {
                                let (a, b) = (p[pi].min(p[pi + 2]), p[pi].max(p[pi + 2]));
                                hit |= (a..=b).contains(&s[0]);
                                pi += 2;
                            } else {
                                hit |= p[pi] == s[0];
                            }
                            pi += 1;
                        }
                        if hit == not {
                            return false;
                        }
                        s = &s[1..];
                    }
                    c => {
                        let c = if c == b'\\' && pi + 1 < p.len() {
                            pi += 1;
                            p[pi]
                        } else {
                            c
                        };
                        if c != s[0] {
                            return false;
                        }
                        s = &s[1..];
                    }
                }
                pi += 1;
                if s.is_empty() {
                    while pi < p.len() && p[pi] == b'*' {
                        pi += 1;
                    }
                    break;
                }
            }
            pi >= p.len() && s.is_empty()
        }
        rec(p, s)
    }

    /// The matcher this one replaced (recursive; `*` also tried the empty rest).
    fn old_matcher(p: &[u8], s: &[u8]) -> bool {
        let (mut pi, mut si) = (0, 0);
        while pi < p.len() {
            match p[pi] {
                b'*' => {
                    while pi + 1 < p.len() && p[pi + 1] == b'*' {
                        pi += 1;
                    }
                    if pi + 1 == p.len() {
                        return true;
                    }
                    return (si..=s.len()).any(|k| old_matcher(&p[pi + 1..], &s[k..]));
                }
                b'?' if si < s.len() => si += 1,
                c if s.get(si) == Some(&c) => si += 1,
                _ => return false,
            }
            pi += 1;
        }
        si == s.len()
    }

    fn glob_bytes(alphabet: &'static [u8], max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(proptest::sample::select(alphabet), 0..max)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn same_as_redis_stringmatchlen(
            p in glob_bytes(b"ab*?[]^-\\", 10),
            s in glob_bytes(b"ab]^-\\*", 8),
        ) {
            let expected = p[..] == b"*"[..] || reference(&p, &s);
            prop_assert_eq!(matches(&p, &s), expected, "pattern {:?} key {:?}",
                String::from_utf8_lossy(&p), String::from_utf8_lossy(&s));
        }

        #[test]
        fn same_as_old_matcher_on_plain_globs(
            p in glob_bytes(b"ab*?", 10),
            s in glob_bytes(b"ab", 10),
        ) {
            // The old matcher let `*x*` match "" too; Redis (and we) don't.
            prop_assume!(!s.is_empty());
            prop_assert_eq!(matches(&p, &s), old_matcher(&p, &s));
        }
    }
}
