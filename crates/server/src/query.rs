//! Query-string parameters: parsed strictly, each error naming its parameter.

use std::str::FromStr;

use axum::extract::rejection::QueryRejection;
use axum::extract::Query;

use crate::error::ApiError;

/// What `axum` extracts: every `name=value` pair in order, or why the query is malformed.
pub type RawParams = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// The query parameters of one request, checked against the names its route knows.
///
/// Every parameter may be given at most once (except list parameters) and never empty; a
/// name the route does not know is an error rather than silently ignored.
#[derive(Debug)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// The parameters of a request to a route that knows the names in `known`.
    pub fn parse(raw: RawParams, known: &[&str]) -> Result<Self, ApiError> {
        let Query(pairs) =
            raw.map_err(|e| ApiError::BadRequest(format!("malformed query string: {e}")))?;
        if let Some((name, _)) = pairs.iter().find(|(n, _)| !known.contains(&n.as_str())) {
            let expected = if known.is_empty() {
                "this route takes none".to_string()
            } else {
                format!("expected {}", known.join(", "))
            };
            return Err(ApiError::BadRequest(format!(
                "unknown query parameter `{name}`: {expected}"
            )));
        }
        Ok(Self { pairs })
    }

    /// The value of a single-valued parameter, if given.
    pub fn get(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut values = self.pairs.iter().filter(|(n, _)| n == name);
        let Some((_, value)) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(ApiError::BadRequest(format!(
                "query parameter `{name}` is given more than once"
            )));
        }
        if value.is_empty() {
            return Err(ApiError::BadRequest(format!(
                "query parameter `{name}` is empty"
            )));
        }
        Ok(Some(value))
    }

    /// A number from 0 to `max`, or `default` when not given.
    pub fn number<T>(&self, name: &str, default: T, max: T) -> Result<T, ApiError>
    where
        T: FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let Some(text) = self.get(name)? else {
            return Ok(default);
        };
        text.parse::<T>()
            .ok()
            .filter(|n| *n <= max && text.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "query parameter `{name}` must be a whole number from 0 to {max}, not {text:?}"
                ))
            })
    }

    /// `true` or `false`, or `default` when not given.
    pub fn boolean(&self, name: &str, default: bool) -> Result<bool, ApiError> {
        match self.get(name)? {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(ApiError::BadRequest(format!(
                "query parameter `{name}` must be true or false, not {other:?}"
            ))),
        }
    }

    /// A list parameter: every value given, repeated (`kind=a&kind=b`) or comma-separated
    /// (`kind=a,b`).
    pub fn list(&self, name: &str) -> Result<Vec<String>, ApiError> {
        let mut out = Vec::new();
        for (_, value) in self.pairs.iter().filter(|(n, _)| n == name) {
            for item in value.split(',').map(str::trim) {
                if item.is_empty() {
                    return Err(ApiError::BadRequest(format!(
                        "query parameter `{name}` has an empty item"
                    )));
                }
                out.push(item.to_string());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)], known: &[&str]) -> Result<Params, ApiError> {
        let pairs = pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        Params::parse(Ok(Query(pairs)), known)
    }

    fn message(e: ApiError) -> String {
        e.to_string()
    }

    #[test]
    fn unknown_repeated_and_empty_parameters_are_named() {
        let e = params(&[("clustr", "x")], &["cluster"]).unwrap_err();
        assert!(message(e).contains("`clustr`"));
        let p = params(&[("cluster", "a"), ("cluster", "b")], &["cluster"]).unwrap();
        assert!(message(p.get("cluster").unwrap_err()).contains("more than once"));
        let p = params(&[("cluster", "")], &["cluster"]).unwrap();
        assert!(message(p.get("cluster").unwrap_err()).contains("`cluster` is empty"));
    }

    #[test]
    fn numbers_booleans_and_lists() {
        let p = params(
            &[
                ("limit", "5"),
                ("history", "true"),
                ("kind", "a,b"),
                ("kind", "c"),
            ],
            &["limit", "history", "kind", "after_id"],
        )
        .unwrap();
        assert_eq!(p.number("limit", 100usize, 10).unwrap(), 5);
        assert_eq!(p.number("after_id", 0i64, i64::MAX).unwrap(), 0);
        assert!(p.boolean("history", false).unwrap());
        assert_eq!(p.list("kind").unwrap(), ["a", "b", "c"]);
        for bad in ["-1", "11", "x", "+3"] {
            let p = params(&[("limit", bad)], &["limit"]).unwrap();
            let e = message(p.number("limit", 100usize, 10).unwrap_err());
            assert!(e.contains("`limit`"), "{e}");
        }
    }
}
