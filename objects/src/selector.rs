//! Label selectors: `matchLabels` and `matchExpressions` with Kubernetes'
//! operators (In, NotIn, Exists, DoesNotExist), and the text form that
//! `kubectl -l` and the REST API's `labelSelector` parameter write
//! (`app=web`, `app!=x`, `tier in (a,b)`, `tier notin (a)`, `key`, `!key`,
//! joined by commas, all of which must hold), read into the same
//! `matchExpressions`, so that a selector in a URL means exactly what a
//! Deployment's selector means.

use std::collections::BTreeMap;

use skiff_proto::v1::{LabelSelector, LabelSelectorRequirement};

use crate::names::{is_label_key, is_label_name};
use crate::typed::meta;

/// Why a selector's text could not be read (what is wrong, and where).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ParseError {
    pub reason: String,
}

/// Reads a selector's text into `matchExpressions` (`app=web` is `app In
/// (web)`, `app!=web` is `app NotIn (web)`). Empty text, or only white
/// space, selects everything, as in Kubernetes.
pub fn parse(text: &str) -> Result<LabelSelector, ParseError> {
    let fail = |reason: String| ParseError { reason };
    let tokens = tokenize(text).map_err(fail)?;
    if tokens.is_empty() {
        return Ok(LabelSelector::default());
    }
    let match_expressions = Parser { tokens, at: 0 }.selector().map_err(fail)?;
    Ok(LabelSelector {
        match_labels: Default::default(),
        match_expressions,
    })
}

/// Whether `labels` satisfy `selector`. An empty selector matches
/// everything, as in Kubernetes. Unknown operators match nothing
/// (validation refuses them before they are stored).
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    selector
        .match_labels
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
        && selector
            .match_expressions
            .iter()
            .all(|e| requirement_holds(&e.key, &e.operator, &e.values, labels))
}

/// [`matches`] for Kubernetes' own `LabelSelector` type (the selectors of
/// the kinds read through [`crate::typed`]).
pub fn matches_typed(selector: &meta::LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
        && selector.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            requirement_holds(&e.key, &e.operator, values, labels)
        })
}

/// Whether one `matchExpressions` requirement holds for `labels`.
fn requirement_holds(
    key: &str,
    operator: &str,
    values: &[String],
    labels: &BTreeMap<String, String>,
) -> bool {
    let value = labels.get(key);
    match operator {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        _ => false,
    }
}

/// Whether a selector selects nothing in particular (no terms at all).
pub fn is_empty(selector: &LabelSelector) -> bool {
    selector.match_labels.is_empty() && selector.match_expressions.is_empty()
}

/// What a label key looks like, for error messages.
const KEY_SHAPE: &str =
    "an optional DNS prefix and '/', then up to 63 letters, digits, '-', '_' or '.'";

/// What a label value looks like, for error messages.
const VALUE_SHAPE: &str =
    "up to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    /// A key, a value, or the words `in` and `notin`.
    Word(&'a str),
    Not,
    Equals,
    NotEquals,
    Comma,
    Open,
    Close,
    /// `<` or `>`: Kubernetes' numeric comparisons, which label selectors
    /// of objects cannot hold; refused with a message.
    Compare(char),
}

impl Token<'_> {
    fn describe(self) -> String {
        match self {
            Token::Word(w) => format!("{w:?}"),
            Token::Not => "\"!\"".to_owned(),
            Token::Equals => "\"=\"".to_owned(),
            Token::NotEquals => "\"!=\"".to_owned(),
            Token::Comma => "\",\"".to_owned(),
            Token::Open => "\"(\"".to_owned(),
            Token::Close => "\")\"".to_owned(),
            Token::Compare(c) => format!("\"{c}\""),
        }
    }
}

fn is_special(b: u8) -> bool {
    matches!(b, b'!' | b'=' | b',' | b'(' | b')' | b'<' | b'>') || b.is_ascii_whitespace()
}

/// Splits on the operators and white space. Every special character is
/// ASCII, so the slices between them are whole UTF-8 characters.
fn tokenize(text: &str) -> Result<Vec<Token<'_>>, String> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let next = bytes.get(i + 1).copied();
        let (token, len) = match b {
            _ if b.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            b'!' if next == Some(b'=') => (Token::NotEquals, 2),
            b'!' => (Token::Not, 1),
            b'=' if next == Some(b'=') => (Token::Equals, 2),
            b'=' => (Token::Equals, 1),
            b',' => (Token::Comma, 1),
            b'(' => (Token::Open, 1),
            b')' => (Token::Close, 1),
            b'<' | b'>' => (Token::Compare(char::from(b)), 1),
            _ => {
                let end = bytes[i..]
                    .iter()
                    .position(|&b| is_special(b))
                    .map_or(bytes.len(), |p| i + p);
                (Token::Word(&text[i..end]), end - i)
            }
        };
        tokens.push(token);
        i += len;
    }
    Ok(tokens)
}

struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    at: usize,
}

/// One term of the selector.
fn term(key: &str, operator: &str, values: Vec<String>) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.to_owned(),
        operator: operator.to_owned(),
        values,
    }
}

/// "expected WHAT, found TOKEN".
fn expected(what: &str, found: Token<'_>) -> String {
    format!("expected {what}, found {}", found.describe())
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<Token<'a>> {
        self.tokens.get(self.at).copied()
    }

    fn advance(&mut self) -> Option<Token<'a>> {
        let token = self.peek();
        self.at += 1;
        token
    }

    /// term (',' term)*
    fn selector(mut self) -> Result<Vec<LabelSelectorRequirement>, String> {
        let mut terms = vec![self.term()?];
        loop {
            match self.advance() {
                None => return Ok(terms),
                Some(Token::Comma) => terms.push(self.term()?),
                Some(other) => return Err(expected("\",\" or the end after a term", other)),
            }
        }
    }

    /// `key`, `!key`, `key=value`, `key==value`, `key!=value`,
    /// `key in (values)` or `key notin (values)`.
    fn term(&mut self) -> Result<LabelSelectorRequirement, String> {
        if self.peek() == Some(Token::Not) {
            self.advance();
            let key = self.key()?;
            return Ok(term(key, "DoesNotExist", Vec::new()));
        }
        let key = self.key()?;
        match self.peek() {
            None | Some(Token::Comma) => Ok(term(key, "Exists", Vec::new())),
            Some(Token::Equals) => {
                self.advance();
                Ok(term(key, "In", vec![self.value()?]))
            }
            Some(Token::NotEquals) => {
                self.advance();
                Ok(term(key, "NotIn", vec![self.value()?]))
            }
            Some(Token::Word("in")) => {
                self.advance();
                Ok(term(key, "In", self.set(key)?))
            }
            Some(Token::Word("notin")) => {
                self.advance();
                Ok(term(key, "NotIn", self.set(key)?))
            }
            Some(Token::Compare(c)) => Err(format!(
                "{key:?}: \"{c}\" compares numbers, which skiff's label selectors do not"
            )),
            Some(other) => Err(format!(
                "after {key:?}: {}",
                expected("=, ==, !=, in, notin, \",\" or the end", other)
            )),
        }
    }

    fn key(&mut self) -> Result<&'a str, String> {
        match self.advance() {
            Some(Token::Word(key)) if is_label_key(key) => Ok(key),
            Some(Token::Word(key)) => Err(format!("{key:?} is not a label key ({KEY_SHAPE})")),
            Some(other) => Err(expected("a label key", other)),
            None => Err("expected a label key at the end".to_owned()),
        }
    }

    /// The value after `=`, `==` or `!=`: may be empty (`app=`).
    fn value(&mut self) -> Result<String, String> {
        match self.peek() {
            Some(Token::Word(value)) => {
                self.advance();
                check_value(value)
            }
            None | Some(Token::Comma) => Ok(String::new()),
            Some(other) => Err(expected("a label value", other)),
        }
    }

    /// `(v1, v2, ...)` after `in` or `notin`. As in Kubernetes, a value may
    /// be empty: `()` is the set of the empty value, `(a,)` holds `a` and it.
    fn set(&mut self, key: &str) -> Result<Vec<String>, String> {
        let unclosed = || format!("{key:?}: the set of values is not closed with \")\"");
        let in_set = |what: &str, found| format!("{key:?}: {}", expected(what, found));
        if self.advance() != Some(Token::Open) {
            return Err(format!("{key:?}: expected \"(\" after in/notin"));
        }
        let mut values = Vec::new();
        loop {
            match self.peek() {
                Some(Token::Word(value)) => {
                    self.advance();
                    values.push(check_value(value)?);
                }
                Some(Token::Comma | Token::Close) => values.push(String::new()),
                Some(other) => return Err(in_set("a value", other)),
                None => return Err(unclosed()),
            }
            match self.advance() {
                Some(Token::Comma) => continue,
                Some(Token::Close) => return Ok(values),
                Some(other) => return Err(in_set("\",\" or \")\"", other)),
                None => return Err(unclosed()),
            }
        }
    }
}

fn check_value(value: &str) -> Result<String, String> {
    if is_label_name(value) {
        Ok(value.to_owned())
    } else {
        Err(format!("{value:?} is not a label value ({VALUE_SHAPE})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn kubernetes_own_selectors_match_as_ours_do() {
        let labels = BTreeMap::from([
            ("app".to_owned(), "web".to_owned()),
            ("tier".to_owned(), "front".to_owned()),
        ]);
        let requirement =
            |key: &str, operator: &str, values: Option<&[&str]>| meta::LabelSelectorRequirement {
                key: key.to_owned(),
                operator: operator.to_owned(),
                values: values.map(|v| v.iter().map(|s| (*s).to_owned()).collect()),
            };
        let selector = |labels: Option<&[(&str, &str)]>, expressions| meta::LabelSelector {
            match_labels: labels.map(|l| {
                l.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect()
            }),
            match_expressions: expressions,
        };
        assert!(matches_typed(&selector(None, None), &labels), "empty: all");
        assert!(matches_typed(
            &selector(Some(&[("app", "web")]), None),
            &labels
        ));
        assert!(!matches_typed(
            &selector(Some(&[("app", "db")]), None),
            &labels
        ));
        let tier_in = |values: &[&str]| Some(vec![requirement("tier", "In", Some(values))]);
        assert!(matches_typed(
            &selector(None, tier_in(&["front", "back"])),
            &labels
        ));
        assert!(!matches_typed(&selector(None, tier_in(&["back"])), &labels));
        let absent = Some(vec![requirement("gone", "DoesNotExist", None)]);
        assert!(matches_typed(
            &selector(Some(&[("app", "web")]), absent),
            &labels
        ));
        let not_in = Some(vec![requirement("app", "NotIn", None)]);
        assert!(
            matches_typed(&selector(None, not_in), &labels),
            "NotIn of none"
        );
        let unknown = Some(vec![requirement("app", "Near", Some(&["web"]))]);
        assert!(!matches_typed(&selector(None, unknown), &labels));
    }

    #[test]
    fn match_labels_and_expressions() {
        let selector = LabelSelector {
            match_labels: labels(&[("app", "web")]),
            match_expressions: vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: vec!["front".into(), "edge".into()],
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: vec![],
                },
            ],
        };
        assert!(matches(
            &selector,
            &labels(&[("app", "web"), ("tier", "edge")])
        ));
        assert!(!matches(
            &selector,
            &labels(&[("app", "web"), ("tier", "back")])
        ));
        assert!(!matches(
            &selector,
            &labels(&[("app", "web"), ("tier", "front"), ("canary", "1")])
        ));
        assert!(!matches(&selector, &labels(&[("tier", "front")])));
        assert!(matches(&LabelSelector::default(), &labels(&[])));
    }

    /// The terms `text` parses to, as (key, operator, values).
    fn terms(text: &str) -> Vec<(String, String, Vec<String>)> {
        parse(text)
            .unwrap()
            .match_expressions
            .iter()
            .map(|r| (r.key.clone(), r.operator.clone(), r.values.clone()))
            .collect()
    }

    fn want(key: &str, operator: &str, values: &[&str]) -> (String, String, Vec<String>) {
        (
            key.to_owned(),
            operator.to_owned(),
            values.iter().map(|v| v.to_string()).collect(),
        )
    }

    #[test]
    fn every_operator_of_the_text_form_is_read() {
        assert_eq!(terms("app=web"), vec![want("app", "In", &["web"])]);
        assert_eq!(terms("app==web"), vec![want("app", "In", &["web"])]);
        assert_eq!(terms("app!=web"), vec![want("app", "NotIn", &["web"])]);
        assert_eq!(terms("app="), vec![want("app", "In", &[""])]);
        assert_eq!(
            terms(" tier in (a, b) ,!canary, example.com/team ,x notin(c)"),
            vec![
                want("tier", "In", &["a", "b"]),
                want("canary", "DoesNotExist", &[]),
                want("example.com/team", "Exists", &[]),
                want("x", "NotIn", &["c"]),
            ]
        );
        assert_eq!(terms("tier in ()"), vec![want("tier", "In", &[""])]);
        assert_eq!(
            terms("tier notin (a,)"),
            vec![want("tier", "NotIn", &["a", ""])]
        );
    }

    #[test]
    fn empty_text_selects_everything() {
        for text in ["", "   "] {
            let selector = parse(text).unwrap();
            assert!(is_empty(&selector), "{text:?}");
            assert!(matches(&selector, &labels(&[("app", "web")])));
        }
    }

    #[test]
    fn bad_text_says_what_is_wrong() {
        for (text, needle) in [
            ("app=web,", "expected a label key at the end"),
            ("app=web,,tier=a", "expected a label key, found \",\""),
            ("tier in (a,b", "not closed"),
            ("tier in a", "expected \"(\""),
            ("tier notin (a b)", "expected \",\" or \")\""),
            ("replicas>2", "compares numbers"),
            ("app=web=x", "expected \",\" or the end"),
            ("app web", "after \"app\""),
            ("-app=web", "not a label key"),
            ("app=-web", "not a label value"),
            ("=web", "expected a label key"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {needle:?} not in {e}");
        }
    }

    #[test]
    fn parsed_text_matches_as_kubernetes_selects() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let api = labels(&[("app", "api")]);
        let bare = labels(&[]);
        let cases = [
            ("app=web", [true, false, false]),
            ("app!=web", [false, true, true]),
            ("tier in (front,edge)", [true, false, false]),
            ("tier notin (front)", [false, true, true]),
            ("app", [true, true, false]),
            ("!tier", [false, true, true]),
            ("app,!tier", [false, true, false]),
            ("app=web,tier=back", [false, false, false]),
        ];
        for (text, expected) in cases {
            let selector = parse(text).unwrap();
            let got = [&web, &api, &bare].map(|l| matches(&selector, l));
            assert_eq!(got, expected, "{text}");
        }
    }
}
