//! Redis-style glob matching (`*`, `?`, `[a-z]`, `[^x]`, `\` escapes), for SCAN MATCH,
//! KEYS and CONFIG GET.

pub fn matches(pattern: &[u8], s: &[u8]) -> bool {
    glob(pattern, s, 0)
}

fn glob(p: &[u8], s: &[u8], depth: usize) -> bool {
    // Bound recursion on patterns like "*a*a*a*..." against hostile input.
    if depth > 64 {
        return false;
    }
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
                return (si..=s.len()).any(|k| glob(&p[pi + 1..], &s[k..], depth + 1));
            }
            b'?' => {
                if si >= s.len() {
                    return false;
                }
                si += 1;
            }
            b'[' => {
                let Some(&c) = s.get(si) else { return false };
                pi += 1;
                let negate = p.get(pi) == Some(&b'^');
                if negate {
                    pi += 1;
                }
                let mut hit = false;
                while pi < p.len() && p[pi] != b']' {
                    if p[pi] == b'\\' && pi + 1 < p.len() {
                        pi += 1;
                        hit |= p[pi] == c;
                    } else if pi + 2 < p.len() && p[pi + 1] == b'-' && p[pi + 2] != b']' {
                        let (a, b) = (p[pi].min(p[pi + 2]), p[pi].max(p[pi + 2]));
                        hit |= (a..=b).contains(&c);
                        pi += 2;
                    } else {
                        hit |= p[pi] == c;
                    }
                    pi += 1;
                }
                if hit == negate {
                    return false;
                }
                si += 1;
            }
            b'\\' if pi + 1 < p.len() => {
                pi += 1;
                if s.get(si) != Some(&p[pi]) {
                    return false;
                }
                si += 1;
            }
            c => {
                if s.get(si) != Some(&c) {
                    return false;
                }
                si += 1;
            }
        }
        pi += 1;
    }
    si == s.len()
}

#[cfg(test)]
mod tests {
    use super::matches;

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
}
