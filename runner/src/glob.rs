//! Shell-style name patterns: `*` is any run of characters, `?` any one.

pub fn is_pattern(text: &str) -> bool {
    text.contains(['*', '?'])
}

pub fn matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Greedy with one backtrack point: the last `*` and where it resumed.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_star_and_question_mark() {
        assert!(matches("boot.smoke", "boot.smoke"));
        assert!(!matches("boot.smok", "boot.smoke"));
        assert!(!matches("boot.smoke", "boot.smok"));
        assert!(matches("core.*", "core.leak"));
        assert!(!matches("core.*", "boot.smoke"));
        assert!(matches("*", ""));
        assert!(matches("*.*", "a.b"));
        assert!(matches("*leak", "core.leak"));
        assert!(matches("c*e.*k", "core.leak"));
        assert!(matches("core.???k", "core.leak"));
        assert!(!matches("core.??k", "core.leak"));
        assert!(matches("**a**", "bab"));
        assert!(!matches("", "a"));
        assert!(matches("a*b*c", "axxbxxbc"));
        assert!(!matches("a*b*c", "axxbxxbcd"));
        assert!(is_pattern("core.*") && is_pattern("a?") && !is_pattern("core.leak"));
    }
}
