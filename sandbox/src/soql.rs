//! A small reader of SOQL-style statements, enough for a sandbox to answer as
//! strictly as the API it imitates: the SELECT field list, the FROM object and the
//! fields the WHERE and ORDER BY clauses name, in
//! `SELECT a, b.c FROM Object [WHERE ...] [ORDER BY ...] [LIMIT n]`. Filter values
//! are read elsewhere (the profile's `input.since`). Functions, subqueries and
//! aliases in the field list are refused with a message saying so, rather than
//! guessed at.

/// What a statement selects, and from which object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Select {
    /// The field names as written (paths like `Account.Name` kept whole).
    pub fields: Vec<String>,
    pub object: String,
    /// Fields the WHERE conditions compare and ORDER BY sorts on.
    pub clause_fields: Vec<String>,
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
        clause_fields: clause_fields(&tokenize(tail)?),
    })
}

/// A piece of the clauses after the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    Word(&'a str),
    Quoted,
    Comparison,
    Open,
    Close,
    Comma,
}

fn tokenize(s: &str) -> Result<Vec<Token<'_>>, ParseError> {
    let word_char = |c: char| c.is_ascii_alphanumeric() || "_.:+-".contains(c);
    let mut tokens = Vec::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '\'' => {
                let mut closed = false;
                while let Some((_, q)) = chars.next() {
                    match q {
                        '\\' => {
                            chars.next();
                        }
                        '\'' => {
                            closed = true;
                            break;
                        }
                        _ => {}
                    }
                }
                if !closed {
                    return Err(ParseError("a quoted value is not closed".into()));
                }
                tokens.push(Token::Quoted);
            }
            '(' => tokens.push(Token::Open),
            ')' => tokens.push(Token::Close),
            ',' => tokens.push(Token::Comma),
            '=' | '!' | '<' | '>' => {
                while chars.next_if(|&(_, n)| "=<>".contains(n)).is_some() {}
                tokens.push(Token::Comparison);
            }
            c if word_char(c) => {
                let mut end = i + c.len_utf8();
                while let Some((j, n)) = chars.next_if(|&(_, n)| word_char(n)) {
                    end = j + n.len_utf8();
                }
                tokens.push(Token::Word(&s[i..end]));
            }
            other => return Err(ParseError(format!("unexpected character `{other}`"))),
        }
    }
    Ok(tokens)
}

fn is_word(t: Option<&Token>, kw: &str) -> bool {
    matches!(t, Some(Token::Word(w)) if w.eq_ignore_ascii_case(kw))
}

/// Whether a comparison starts at `tokens[i]` (`=`, `LIKE`, `IN`, `NOT IN`, ...).
fn comparison_at(tokens: &[Token], i: usize) -> bool {
    matches!(tokens.get(i), Some(Token::Comparison))
        || ["like", "in", "includes", "excludes"]
            .iter()
            .any(|kw| is_word(tokens.get(i), kw))
        || (is_word(tokens.get(i), "not") && is_word(tokens.get(i + 1), "in"))
}

/// The fields WHERE compares (a name before a comparison; semi-join subqueries
/// skipped) and ORDER BY sorts on (the first name of each item).
fn clause_fields(tokens: &[Token]) -> Vec<String> {
    #[derive(PartialEq)]
    enum Clause {
        Where,
        Order { expect_field: bool },
        Other,
    }
    let mut clause = Clause::Other;
    let mut fields = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        if is_word(Some(t), "where") {
            clause = Clause::Where;
        } else if is_word(Some(t), "order") && is_word(tokens.get(i + 1), "by") {
            clause = Clause::Order { expect_field: true };
            i += 1;
        } else if ["limit", "offset", "group", "with", "for", "using"]
            .iter()
            .any(|kw| is_word(Some(t), kw))
        {
            clause = Clause::Other;
        } else {
            match (&mut clause, t) {
                (Clause::Where, Token::Open) if is_word(tokens.get(i + 1), "select") => {
                    let mut depth = 0usize;
                    while i < tokens.len() {
                        match tokens[i] {
                            Token::Open => depth += 1,
                            Token::Close => depth -= 1,
                            _ => {}
                        }
                        if depth == 0 {
                            break;
                        }
                        i += 1;
                    }
                }
                (Clause::Where, Token::Word(w))
                    if is_field_path(w)
                        && !["and", "or", "not"]
                            .iter()
                            .any(|kw| w.eq_ignore_ascii_case(kw))
                        && comparison_at(tokens, i + 1) =>
                {
                    fields.push(w.to_string());
                }
                (Clause::Order { expect_field }, Token::Word(w)) if *expect_field => {
                    fields.push(w.to_string());
                    *expect_field = false;
                }
                (Clause::Order { expect_field }, Token::Comma) => *expect_field = true,
                _ => {}
            }
        }
        i += 1;
    }
    fields
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
    fn reads_the_fields_where_compares_and_order_by_sorts_on() {
        let s = parse(
            "SELECT Id FROM Contact WHERE (SystemModstamp >= 2024-05-01T10:00:00Z AND Name LIKE 'a%') \
             OR Region__c NOT IN ('x', 'y') OR CreatedDate = LAST_N_DAYS:3 OR Email != null \
             AND AccountId IN (SELECT Id FROM Account WHERE Hidden__c = true) \
             ORDER BY LastName DESC NULLS LAST, Id LIMIT 10",
        )
        .unwrap();
        assert_eq!(
            s.clause_fields,
            [
                "SystemModstamp",
                "Name",
                "Region__c",
                "CreatedDate",
                "Email",
                "AccountId",
                "LastName",
                "Id"
            ]
        );
        assert!(parse("SELECT Id FROM Contact")
            .unwrap()
            .clause_fields
            .is_empty());
        assert!(parse("SELECT Id FROM Contact WHERE Name = 'open").is_err());
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
