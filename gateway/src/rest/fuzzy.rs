//! The "Perhaps you meant …" of PostgREST's PGRST202 / PGRST205 hints: a fuzzy set
//! as the `fuzzyset` package (a port of fuzzyset.js) scores it — cosine similarity of
//! 3-grams (then 2-grams if none match) of the lower-cased text, the best 50
//! rescored by Levenshtein distance, kept above a minimum score.

use std::collections::HashMap;

/// The grams of `value` (lower case, letters, digits, spaces and commas, padded
/// with `-`), counted.
fn grams(value: &str, size: usize) -> HashMap<Vec<char>, usize> {
    let mut chars: Vec<char> = vec!['-'];
    chars.extend(value.to_lowercase().chars().filter(|c| c.is_alphanumeric() || *c == ' ' || *c == ','));
    chars.push('-');
    while chars.len() < size {
        chars.push('-');
    }
    let mut out = HashMap::new();
    for w in chars.windows(size) {
        *out.entry(w.to_vec()).or_insert(0) += 1;
    }
    out
}

fn norm(g: &HashMap<Vec<char>, usize>) -> f64 {
    g.values().map(|c| (c * c) as f64).sum::<f64>().sqrt()
}

fn levenshtein(a: &[char], b: &[char]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The best of `candidates` for `value` with a score of at least `min_score`.
pub fn best<'a>(candidates: &[&'a str], value: &str, min_score: f64) -> Option<&'a str> {
    // A name more than three times the longest candidate scores under 0.33 against
    // every one (the edit distance is at least the length difference): not scored,
    // so a 60 KB name in a URL costs nothing (the distance is quadratic in length).
    let longest = candidates.iter().map(|c| c.chars().count()).max().unwrap_or(0);
    if value.chars().count() > 3 * longest + 3 {
        return None;
    }
    let lower = value.to_lowercase();
    if let Some(exact) = candidates.iter().find(|c| c.to_lowercase() == lower) {
        return Some(exact);
    }
    for size in [3, 2] {
        let want = grams(value, size);
        let want_norm = norm(&want);
        let mut scored: Vec<(f64, &str)> = candidates
            .iter()
            .filter_map(|c| {
                let have = grams(c, size);
                let dot: usize = want.iter().filter_map(|(g, n)| have.get(g).map(|m| n * m)).sum();
                (dot > 0).then(|| (dot as f64 / (want_norm * norm(&have)), *c))
            })
            .collect();
        if scored.is_empty() {
            continue;
        }
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.truncate(50);
        let l: Vec<char> = lower.chars().collect();
        let mut rescored: Vec<(f64, &str)> = scored
            .into_iter()
            .map(|(_, c)| {
                let cl: Vec<char> = c.to_lowercase().chars().collect();
                (1.0 - levenshtein(&cl, &l) as f64 / cl.len().max(l.len()).max(1) as f64, c)
            })
            .collect();
        rescored.sort_by(|a, b| b.0.total_cmp(&a.0));
        let kept: Vec<&str> = rescored.into_iter().filter(|(s, _)| *s >= min_score).map(|(_, c)| c).collect();
        if let Some(first) = kept.first() {
            return Some(first);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn hints_as_postgrest_gives_them() {
        // The doctests of PostgREST's noRpcHint.
        let procs = ["test", "another"];
        assert_eq!(super::best(&procs, "testt", 0.75), Some("test"));
        assert_eq!(super::best(&procs, "noclosealternative", 0.75), None);
        assert_eq!(super::best(&procs, "other", 0.75), None);
        let params = ["(name, param, val)", "(attr, id)"];
        assert_eq!(super::best(&params, "(nam, pqaram, vall)", 0.33), Some("(name, param, val)"));
        assert_eq!(super::best(&params, "(param, val)", 0.33), Some("(name, param, val)"));
        assert_eq!(super::best(&params, "(attrs, id)", 0.33), Some("(attr, id)"));
        assert_eq!(super::best(&params, "(id)", 0.33), Some("(attr, id)"));
        assert_eq!(super::best(&params, "(noclosealternative)", 0.33), None);
        // A huge name is not scored at all.
        let started = std::time::Instant::now();
        assert_eq!(super::best(&procs, &"testt".repeat(12_000), 0.75), None);
        assert!(started.elapsed() < std::time::Duration::from_millis(50));
    }
}
