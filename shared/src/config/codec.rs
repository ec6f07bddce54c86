//! How one setting's text becomes its value, and how its default is shown in the table.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Reads a variable's text into a value, and shows a default value as the README does.
pub trait Codec<T> {
    fn parse(text: &str) -> Result<T, String>;
    fn show(value: &T) -> String;
}

/// Text as it is.
pub struct Text;
/// Text, or unset (shown empty).
pub struct OptText;
/// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
pub struct Flag;
/// A number.
pub struct Number;
/// A number, or unset.
pub struct OptNumber;
/// One of a closed set of names (`FromStr` says which).
pub struct Named;
/// Seconds, fractions allowed.
pub struct Seconds;
/// Milliseconds.
pub struct Millis;
/// A comma-separated list.
pub struct List;

impl Codec<String> for Text {
    fn parse(text: &str) -> Result<String, String> {
        Ok(text.to_string())
    }
    fn show(value: &String) -> String {
        value.clone()
    }
}

impl Codec<PathBuf> for Text {
    fn parse(text: &str) -> Result<PathBuf, String> {
        Ok(PathBuf::from(text))
    }
    fn show(value: &PathBuf) -> String {
        value.display().to_string()
    }
}

impl Codec<Option<String>> for OptText {
    fn parse(text: &str) -> Result<Option<String>, String> {
        Ok(Some(text.to_string()))
    }
    fn show(value: &Option<String>) -> String {
        value.clone().unwrap_or_default()
    }
}

impl Codec<Option<PathBuf>> for OptText {
    fn parse(text: &str) -> Result<Option<PathBuf>, String> {
        Ok(Some(PathBuf::from(text)))
    }
    fn show(value: &Option<PathBuf>) -> String {
        value
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }
}

impl Codec<bool> for Flag {
    fn parse(text: &str) -> Result<bool, String> {
        match text.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            other => Err(format!("`{other}` is not a boolean (use true or false)")),
        }
    }
    fn show(value: &bool) -> String {
        value.to_string()
    }
}

fn number<T: FromStr>(text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("`{text}` is not a number"))
}

impl<T: FromStr + ToString> Codec<T> for Number {
    fn parse(text: &str) -> Result<T, String> {
        number(text)
    }
    fn show(value: &T) -> String {
        value.to_string()
    }
}

impl<T: FromStr + ToString> Codec<Option<T>> for OptNumber {
    fn parse(text: &str) -> Result<Option<T>, String> {
        number(text).map(Some)
    }
    fn show(value: &Option<T>) -> String {
        value.as_ref().map(T::to_string).unwrap_or_default()
    }
}

impl<T: FromStr<Err = crate::domain::UnknownName> + std::fmt::Display> Codec<T> for Named {
    fn parse(text: &str) -> Result<T, String> {
        text.parse()
            .map_err(|e: crate::domain::UnknownName| e.to_string())
    }
    fn show(value: &T) -> String {
        value.to_string()
    }
}

impl Codec<Duration> for Seconds {
    fn parse(text: &str) -> Result<Duration, String> {
        let n: f64 = number(text)?;
        Duration::try_from_secs_f64(n)
            .map_err(|_| format!("`{text}` is not a number of seconds >= 0"))
    }
    fn show(value: &Duration) -> String {
        let s = value.as_secs_f64();
        if s.fract() == 0.0 {
            format!("{}", value.as_secs())
        } else {
            format!("{s}")
        }
    }
}

impl Codec<Duration> for Millis {
    fn parse(text: &str) -> Result<Duration, String> {
        number(text).map(Duration::from_millis)
    }
    fn show(value: &Duration) -> String {
        value.as_millis().to_string()
    }
}

impl Codec<Vec<String>> for List {
    fn parse(text: &str) -> Result<Vec<String>, String> {
        Ok(text
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect())
    }
    fn show(value: &Vec<String>) -> String {
        value.join(",")
    }
}
