//! A small reader of SOQL-style statements, enough for a sandbox to answer as
//! strictly as the API it imitates: the SELECT field list and the FROM object of
//! `SELECT a, b.c FROM Object [WHERE ...] [ORDER BY ...] [LIMIT n]`. What follows
//! the object is only checked to start with a clause keyword; filters are read
//! elsewhere (the profile's `input.since`). Functions, subqueries and aliases in
//! the field list are refused with a message saying so, rather than guessed at.

/// What a statement selects, and from which object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Select {
    /// The field names as written (paths like `Account.Name` kept whole).
    pub fields: Vec<String>,
    pub object: String,
}

/// Why a statement cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// Keywords that may follow `FROM Object`.
const CLAUSES: &[&str] = &[
    "where", "with", "group", "order", "limit", "offset", "for", "update", "using",
];

pub fn parse(query: &str) -> Result<Select, ParseError> {
    let q = query.trim();
    let fail = |m: String| Err(ParseError(m));
    if !starts_with_word(q, "select") {
        return fail("the query must start with SELECT".into());
    }
    let after_select = "select".len();
    let Some(from) = find_from(q, after_select) else {
        return fail("the query has no FROM clause".into());
    };
    let fields = split_fields(&q[after_select..from])?;
    let rest = q[from + "from".len()..].trim_start();
    let object_len = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    if object_len == 0 {
        return fail("FROM names no object".into());
    }
    let (object, tail) = rest.split_at(object_len);
    let tail = tail.trim_start();
    if !tail.is_empty() && !CLAUSES.iter().any(|kw| starts_with_word(tail, kw)) {
        let word: String = tail.chars().take_while(|c| !c.is_whitespace()).collect();
        return fail(format!("unexpected token `{word}` after FROM {object}"));
    }
    Ok(Select {
        fields,
        object: object.to_string(),
    })
}

/// Whether `s` starts with `word` (any case) followed by a non-word character or the end.
fn starts_with_word(s: &str, word: &str) -> bool {
    s.len() >= word.len()
        && s.is_char_boundary(word.len())
        && s[..word.len()].eq_ignore_ascii_case(word)
        && s[word.len()..]
            .chars()
            .next()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'))
}

/// The byte offset of the first FROM outside parentheses and quotes, after `start`.
fn find_from(q: &str, start: usize) -> Option<usize> {
    let bytes = q.as_bytes();
    let mut depth = 0usize;
    let mut quoted = false;
    let mut i = start;
    while i < bytes.len() {
        let c = bytes[i];
        if quoted {
            match c {
                b'\\' => i += 1,
                b'\'' => quoted = false,
                _ => {}
            }
        } else {
            match c {
                b'\'' => quoted = true,
                b'(' => depth += 1,
                b')' => depth = depth.saturating_sub(1),
                _ if depth == 0
                    && q.is_char_boundary(i)
                    && !bytes[i - 1].is_ascii_alphanumeric()
                    && bytes[i - 1] != b'_'
                    && starts_with_word(&q[i..], "from") =>
                {
                    return Some(i);
                }
                _ => {}
            }
        }
        i += 1;
    }
    None
}

/// The comma-separated field names between SELECT and FROM.
fn split_fields(list: &str) -> Result<Vec<String>, ParseError> {
    if list.trim().is_empty() {
        return Err(ParseError("SELECT names no field".into()));
    }
    let mut fields = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    let mut items = Vec::new();
    for (i, c) in list.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                items.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&list[start..]);
    for item in items {
        let item = item.trim();
        if item.is_empty() {
            return Err(ParseError("a field name is missing between commas".into()));
        }
        if !is_field_path(item) {
            return Err(ParseError(format!(
                "the sandbox reads only field names in SELECT, not `{item}`"
            )));
        }
        fields.push(item.to_string());
    }
    Ok(fields)
}

/// `Name` or `Account.Owner.Name`.
fn is_field_path(s: &str) -> bool {
    s.split('.').all(|seg| {
        let mut chars = seg.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(q: &str) -> Vec<String> {
        parse(q).unwrap().fields
    }

    #[test]
    fn reads_fields_and_object_across_lines_and_cases() {
        let s = parse(
            "SELECT Id, FirstName,\n  Account.Name, Tier__c FROM Contact\n WHERE SystemModstamp >= 2024-05-01T10:00:00Z ORDER BY SystemModstamp ASC",
        )
        .unwrap();
        assert_eq!(s.fields, ["Id", "FirstName", "Account.Name", "Tier__c"]);
        assert_eq!(s.object, "Contact");
        assert_eq!(
            parse("select id from account limit 5").unwrap().object,
            "account"
        );
        assert_eq!(fields("SELECT Id FROM Lead"), ["Id"]);
    }

    #[test]
    fn from_inside_quotes_parentheses_or_names_is_not_the_clause() {
        let s = parse("SELECT Fromage__c, IdFrom FROM Opportunity WHERE Name = 'from x'").unwrap();
        assert_eq!(s.fields, ["Fromage__c", "IdFrom"]);
        assert_eq!(s.object, "Opportunity");
    }

    #[test]
    fn what_it_cannot_read_is_refused_with_a_reason() {
        let err = |q: &str| parse(q).unwrap_err().0;
        assert!(err("Id FROM Contact").contains("start with SELECT"));
        assert!(err("SELECT Id, Name").contains("no FROM"));
        assert!(err("SELECT FROM Contact").contains("no field"));
        assert!(err("SELECT Id,, Name FROM Contact").contains("missing"));
        assert!(err("SELECT FIELDS(ALL) FROM Contact LIMIT 200").contains("FIELDS(ALL)"));
        assert!(err("SELECT Id, (SELECT Id FROM Contacts) FROM Account").contains("(SELECT"));
        assert!(err("SELECT Name n FROM Contact").contains("`Name n`"));
        assert!(err("SELECT Id FROM").contains("no object"));
        assert!(err("SELECT Id FROM Contact BOGUS x").contains("BOGUS"));
        assert!(err("SELECT Prénom FROM Contact").contains("Prénom"));
    }
}
