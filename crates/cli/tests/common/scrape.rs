//! `GET /metrics` read strictly: the Prometheus text exposition format (version 0.0.4) as a
//! scraper would take it, so a test fails on any line Prometheus would refuse.

use std::collections::{BTreeMap, HashMap};

use super::http_request;

/// A series: its name and its labels, sorted.
type Series = (String, BTreeMap<String, String>);

/// One scrape, checked as it is read: every family has one `# TYPE` before its samples, a
/// family's samples are together, no series appears twice, names and label names are valid,
/// label values are properly escaped, values are numbers.
#[derive(Debug, Default)]
pub struct Scrape {
    types: HashMap<String, String>,
    samples: HashMap<Series, f64>,
}

impl Scrape {
    /// Scrapes the server whose HTTP listener is `http_addr`: the text as served, and read.
    pub fn get(http_addr: &str) -> (String, Scrape) {
        let (status, head, body) = http_request(http_addr, "GET", "/metrics", None, "text/plain");
        assert_eq!(status, 200, "{head}");
        let head = head.to_ascii_lowercase();
        assert!(head.contains("content-type: text/plain; version=0.0.4"), "{head}");
        assert!(!head.contains("chunked"), "{head}");
        let scrape = Scrape::parse(&body);
        (body, scrape)
    }

    pub fn parse(text: &str) -> Scrape {
        let mut scrape = Scrape::default();
        let mut current: Option<String> = None;
        let mut finished: Vec<String> = Vec::new();
        for line in text.lines() {
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix("# ") {
                let mut words = comment.splitn(3, ' ');
                let (keyword, name) = (words.next().unwrap(), words.next().expect("a name"));
                assert!(valid_name(name), "bad family name in {line:?}");
                match keyword {
                    "HELP" => {}
                    "TYPE" => {
                        let kind = words.next().expect("a type");
                        assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind));
                        assert!(
                            scrape.types.insert(name.to_owned(), kind.to_owned()).is_none(),
                            "two TYPEs: {name}"
                        );
                    }
                    _ => panic!("unexpected comment {line:?}"),
                }
                continue;
            }
            assert!(!line.starts_with('#'), "unexpected comment {line:?}");
            let (series, value) = parse_sample(line);
            let family = scrape.family_of(&series.0);
            if current.as_deref() != Some(family.as_str()) {
                assert!(!finished.contains(&family), "family {family} is split");
                finished.extend(current.replace(family));
            }
            assert!(scrape.samples.insert(series, value).is_none(), "duplicate series {line:?}");
        }
        scrape
    }

    /// The family a sample belongs to, which must have a `# TYPE`.
    fn family_of(&self, name: &str) -> String {
        if self.types.contains_key(name) {
            return name.to_owned();
        }
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix)
                && self.types.get(base).is_some_and(|kind| kind == "histogram" || kind == "summary")
            {
                return base.to_owned();
            }
        }
        panic!("sample {name} has no # TYPE before it");
    }

    /// A family's type.
    pub fn kind(&self, family: &str) -> &str {
        self.types.get(family).unwrap_or_else(|| panic!("no family {family}"))
    }

    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value_if_any(name, labels).unwrap_or_else(|| panic!("no series {name} {labels:?}"))
    }

    pub fn value_if_any(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let series = (name.to_owned(), labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        self.samples.get(&series).copied()
    }

    /// Every value of the `label` label among `name`'s series that also carry every label of
    /// `with`, sorted.
    pub fn label_values(&self, name: &str, label: &str, with: &[(&str, &str)]) -> Vec<String> {
        let mut values: Vec<String> = self
            .samples
            .keys()
            .filter(|(n, labels)| {
                n == name && with.iter().all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .filter_map(|(_, labels)| labels.get(label).cloned())
            .collect();
        values.sort();
        values.dedup();
        values
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `name{label="value",...} value`, label values unescaped.
fn parse_sample(line: &str) -> (Series, f64) {
    let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("no value in {line:?}"));
    let name = &line[..name_end];
    assert!(valid_name(name), "bad metric name in {line:?}");
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        while !rest.starts_with('}') {
            let eq = rest.find("=\"").unwrap_or_else(|| panic!("bad label in {line:?}"));
            let label = &rest[..eq];
            assert!(valid_name(label) && !label.starts_with("__"), "bad label name in {line:?}");
            let mut value = String::new();
            let mut chars = rest[eq + 2..].char_indices();
            let end = loop {
                match chars.next().unwrap_or_else(|| panic!("unterminated label in {line:?}")) {
                    (i, '"') => break eq + 2 + i,
                    (_, '\\') => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => panic!("bad escape {other:?} in {line:?}"),
                    },
                    (_, '\n') => panic!("raw newline in {line:?}"),
                    (_, c) => value.push(c),
                }
            };
            assert!(labels.insert(label.to_owned(), value).is_none(), "label twice in {line:?}");
            rest = &rest[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
        rest = &rest[1..];
    }
    let value = rest.strip_prefix(' ').unwrap_or_else(|| panic!("no space before the value in {line:?}"));
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
    };
    ((name.to_owned(), labels), value)
}
