//! Which fields of each record a listing returns. Where the real API makes
//! fields opt-in, so does the sandbox (profile options `named_properties` and
//! `select_query`): a lenient sandbox would hide a spec that forgets to ask for
//! what its mapping reads, which real tenants then find.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use crate::lock;
use crate::profile::{NamedProperties, SelectQuery};
use crate::soql::Select;

/// What a listing keeps of each record.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    /// The whole record (no option asks otherwise).
    Whole,
    /// Only these keys of the object at `under` (the rest of the record is kept),
    /// or of the record itself when `under` is `None`.
    Properties {
        under: Option<String>,
        names: HashSet<String>,
    },
    /// Only these top-level keys, in this order.
    Fields(Arc<Vec<String>>),
}

impl Selection {
    /// The record as this selection returns it.
    pub fn apply(&self, record: &Value) -> Value {
        match (self, record) {
            (Selection::Whole, _) => record.clone(),
            (Selection::Properties { under, names }, Value::Object(obj)) => {
                let mut out = obj.clone();
                match under {
                    Some(under) => {
                        if let Some(Value::Object(props)) = out.get_mut(under.as_str()) {
                            props.retain(|k, _| names.contains(k));
                        }
                    }
                    None => out.retain(|k, _| names.contains(k)),
                }
                Value::Object(out)
            }
            (Selection::Fields(keys), Value::Object(obj)) => Value::Object(
                keys.iter()
                    .filter_map(|k| Some((k.clone(), obj.get(k)?.clone())))
                    .collect::<Map<_, _>>(),
            ),
            _ => record.clone(),
        }
    }
}

/// The properties a request names (`names` evaluated over it: a comma-separated
/// string or an array of strings), the documented defaults when it names none,
/// and those always returned.
pub fn named_properties(np: &NamedProperties, names: Option<Value>) -> Selection {
    let mut named: HashSet<String> = match names {
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => HashSet::new(),
    };
    if named.is_empty() {
        named.extend(np.when_none.iter().cloned());
    }
    named.extend(np.always.iter().cloned());
    Selection::Properties {
        under: np.under.clone(),
        names: named,
    }
}

/// The record keys a statement selects (the records' own spelling; names compare
/// without case, as the query language does), after those always returned; or the
/// first field it selects, filters or sorts on that the records do not have. A path (`Account.Name`) needs its
/// first segment to be a field, and returns that field whole.
pub fn selected_fields(
    select: &Select,
    q: &SelectQuery,
    fields: &BTreeSet<String>,
) -> Result<Vec<String>, String> {
    let find = |name: &str| {
        fields
            .iter()
            .find(|f| f.eq_ignore_ascii_case(name))
            .cloned()
    };
    let mut keys: Vec<String> = q.always.iter().filter_map(|k| find(k)).collect();
    let head = |field: &str| find(field.split('.').next().unwrap_or(field));
    for field in &select.fields {
        let Some(key) = head(field) else {
            return Err(field.clone());
        };
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    if let Some(unknown) = select.clause_fields.iter().find(|f| head(f).is_none()) {
        return Err(unknown.clone());
    }
    Ok(keys)
}

/// The field selections handed out inside query locators: the next page of a
/// query returns what its first page selected, as the real locator remembers.
#[derive(Default)]
pub struct Selections(Mutex<Vec<Arc<Vec<String>>>>);

impl Selections {
    /// The id of this selection (the same selection keeps its id).
    pub fn register(&self, keys: &Arc<Vec<String>>) -> usize {
        let mut all = lock(&self.0);
        if let Some(i) = all.iter().position(|k| k == keys) {
            return i;
        }
        all.push(keys.clone());
        all.len() - 1
    }

    pub fn get(&self, id: usize) -> Option<Arc<Vec<String>>> {
        lock(&self.0).get(id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn np() -> NamedProperties {
        NamedProperties {
            names: "query.properties".into(),
            under: Some("properties".into()),
            always: vec!["id_prop".into()],
            when_none: vec!["name".into()],
            unknown: None,
        }
    }

    #[test]
    fn only_named_properties_and_those_always_returned_are_kept() {
        let rec = json!({"id": "1", "properties": {"id_prop": "1", "name": "A", "city": "B", "empty": null}, "archived": false});
        let sel = named_properties(&np(), Some(json!("city, empty,unknown")));
        assert_eq!(
            sel.apply(&rec),
            json!({"id": "1", "properties": {"id_prop": "1", "city": "B", "empty": null}, "archived": false})
        );
        let sel = named_properties(&np(), Some(json!(["name"])));
        assert_eq!(
            sel.apply(&rec)["properties"],
            json!({"id_prop": "1", "name": "A"})
        );
        let sel = named_properties(&np(), None);
        assert_eq!(
            sel.apply(&rec)["properties"],
            json!({"id_prop": "1", "name": "A"})
        );
    }

    #[test]
    fn without_under_the_record_keys_themselves_are_selected() {
        let np = NamedProperties {
            names: "query.`$select`".into(),
            under: None,
            always: vec!["id".into()],
            when_none: vec!["displayName".into()],
            unknown: None,
        };
        let rec = json!({"id": "u1", "displayName": "Ada", "mail": "a@x", "jobTitle": null});
        let sel = named_properties(&np, Some(json!("mail,jobTitle,nope")));
        assert_eq!(
            sel.apply(&rec),
            json!({"id": "u1", "mail": "a@x", "jobTitle": null})
        );
        assert_eq!(
            named_properties(&np, None).apply(&rec),
            json!({"id": "u1", "displayName": "Ada"})
        );
    }

    #[test]
    fn selected_fields_resolve_without_case_and_unknown_ones_are_named() {
        let q = SelectQuery {
            param: "q".into(),
            location: Default::default(),
            object: "Contact".into(),
            always: vec!["attributes".into()],
            invalid_field: crate::profile::Answer::default(),
            malformed: crate::profile::Answer::default(),
            invalid_type: crate::profile::Answer::default(),
        };
        let fields: BTreeSet<String> = ["attributes", "Id", "Name", "Email"]
            .map(String::from)
            .into();
        let select = |f: &[&str]| Select {
            fields: f.iter().map(|s| s.to_string()).collect(),
            object: "Contact".into(),
            clause_fields: vec!["email".into()],
        };
        assert_eq!(
            selected_fields(&select(&["id", "Name"]), &q, &fields).unwrap(),
            ["attributes", "Id", "Name"]
        );
        assert_eq!(
            selected_fields(&select(&["Id", "Phone"]), &q, &fields),
            Err("Phone".into())
        );
        let mut sorted_on_unknown = select(&["Id"]);
        sorted_on_unknown.clause_fields.push("Region__c".into());
        assert_eq!(
            selected_fields(&sorted_on_unknown, &q, &fields),
            Err("Region__c".into())
        );
        let keys = Arc::new(vec!["attributes".to_string(), "Id".to_string()]);
        let rec = json!({"attributes": {"type": "Contact"}, "Id": "003", "Name": "Ada"});
        assert_eq!(
            Selection::Fields(keys).apply(&rec),
            json!({"attributes": {"type": "Contact"}, "Id": "003"})
        );
    }
}
