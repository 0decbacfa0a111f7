//! "Did you mean" for a workload slug that was not found: which of a project's slugs are close to the one asked
//! for, and the hint a 404 message gains.

/// Most slugs one hint names.
const MAX_SUGGESTIONS: usize = 3;

/// Largest edit distance at which a slug still counts as similar (a typo or two, a missing suffix digit).
const MAX_DISTANCE: usize = 2;

/// The slugs of `candidates` similar to `wanted`: within edit distance 2, or one containing the other (`bot` and
/// `support-bot`). Closest first, ties by slug, at most three; `wanted` itself and duplicates are left out.
fn similar_slugs<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut scored: Vec<(usize, &str)> = candidates
        .into_iter()
        .filter(|slug| !slug.is_empty() && *slug != wanted)
        .filter_map(|slug| {
            let distance = levenshtein(wanted, slug);
            let contains = !wanted.is_empty() && (slug.contains(wanted) || wanted.contains(slug));
            (distance <= MAX_DISTANCE || contains).then_some((distance, slug))
        })
        .collect();
    scored.sort_unstable();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored
        .into_iter()
        .take(MAX_SUGGESTIONS)
        .map(|(_, slug)| slug.to_owned())
        .collect()
}

/// The hint for a 404 of workload `wanted` given the project's `slugs`; `None` when `wanted` is among them (the
/// workload exists, so the 404 means something else and a hint would mislead).
pub(crate) fn not_found_hint<'a>(
    project: &str,
    wanted: &str,
    slugs: impl IntoIterator<Item = &'a str> + Clone,
) -> Option<String> {
    if slugs.clone().into_iter().any(|slug| slug == wanted) {
        return None;
    }
    Some(slug_hint(project, &similar_slugs(wanted, slugs)))
}

/// The hint appended to a workload's 404 message: ` (did you mean "support-bot"?)`, ` (did you mean "a", "b" or
/// "c"?)`, or ` (no workload in project "local" has a similar slug)` when nothing is close.
fn slug_hint(project: &str, similar: &[String]) -> String {
    let quoted: Vec<String> = similar.iter().map(|slug| format!("{slug:?}")).collect();
    match quoted.split_last() {
        None => format!(" (no workload in project {project:?} has a similar slug)"),
        Some((only, [])) => format!(" (did you mean {only}?)"),
        Some((last, rest)) => format!(" (did you mean {} or {last}?)", rest.join(", ")),
    }
}

/// The Levenshtein distance between `a` and `b`, counted in characters.
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn distance() {
        assert_eq!(levenshtein("", ""), 0);
        assert_eq!(levenshtein("abc", ""), 3);
        assert_eq!(levenshtein("support-bot", "suport-bot"), 1);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("héllo", "hello"), 1);
    }

    #[test]
    fn typos_and_containment_are_similar_closest_first() {
        let slugs = ["support-bot", "billing", "support-bot-2", "embedder", "bot"];
        // `bot` is contained in the slug asked for, however far apart they are.
        assert_eq!(similar_slugs("suport-bot", slugs), ["support-bot", "bot"]);
        assert_eq!(
            similar_slugs("support", slugs),
            ["support-bot", "support-bot-2"]
        );
        assert_eq!(
            similar_slugs("bot", slugs),
            ["support-bot", "support-bot-2"]
        );
        assert!(similar_slugs("reranker", slugs).is_empty());
    }

    #[test]
    fn at_most_three_deterministic_and_never_the_slug_itself() {
        let slugs = ["bot-4", "bot-1", "bot-3", "bot-2", "bot", "bot-1"];
        assert_eq!(similar_slugs("bot", slugs), ["bot-1", "bot-2", "bot-3"]);
        assert_eq!(similar_slugs("bot-9", slugs), ["bot-1", "bot-2", "bot-3"]);
        assert_eq!(
            similar_slugs("bot-12", ["bot-1", "bot-21"]),
            ["bot-1", "bot-21"]
        );
        assert!(similar_slugs("x", Vec::<&str>::new()).is_empty());
    }

    #[test]
    fn no_hint_when_the_workload_is_listed() {
        assert_eq!(not_found_hint("p", "bot", ["bot", "bot-1"]), None);
        assert_eq!(
            not_found_hint("p", "bot-2", ["bot", "bot-1"]).as_deref(),
            Some(" (did you mean \"bot-1\" or \"bot\"?)")
        );
        assert_eq!(
            not_found_hint("p", "x", Vec::<&str>::new()).as_deref(),
            Some(" (no workload in project \"p\" has a similar slug)")
        );
    }

    #[test]
    fn hint_wording() {
        let one = vec!["support-bot".to_owned()];
        assert_eq!(slug_hint("local", &one), " (did you mean \"support-bot\"?)");
        let two = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(slug_hint("local", &two), " (did you mean \"a\" or \"b\"?)");
        let three = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        assert_eq!(
            slug_hint("local", &three),
            " (did you mean \"a\", \"b\" or \"c\"?)"
        );
        assert_eq!(
            slug_hint("local", &[]),
            " (no workload in project \"local\" has a similar slug)"
        );
    }
}
