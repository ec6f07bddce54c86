//! Deterministic generated records: the same seed and index always give the
//! same canonical record, which profiles reshape into each provider's format.

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const FIRST: &[&str] = &[
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret", "Radia",
    "Tim", "Hedy",
];
const LAST: &[&str] = &[
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Thompson",
    "Hamilton",
    "Perlman",
    "Berners-Lee",
    "Lamarr",
];
const COMPANIES: &[&str] = &[
    "Analytical Engines",
    "Difference Ltd",
    "Compiler Works",
    "Lambda Labs",
    "Packet Co",
    "Orbit Systems",
];
const TITLES: &[&str] = &[
    "Engineer", "Director", "Analyst", "Manager", "Designer", "Founder",
];
const DEPARTMENTS: &[&str] = &["Engineering", "Sales", "Finance", "People", "Support"];
const CITIES: &[(&str, &str)] = &[
    ("London", "GB"),
    ("Berlin", "DE"),
    ("Austin", "US"),
    ("Paris", "FR"),
    ("Lagos", "NG"),
];
const STAGES: &[&str] = &[
    "appointmentscheduled",
    "qualifiedtobuy",
    "contractsent",
    "closedwon",
    "closedlost",
];
const TICKET_STATUS: &[&str] = &["new", "open", "pending", "hold", "solved", "closed"];
const PRIORITIES: &[&str] = &["low", "normal", "high", "urgent"];
const COLORS: &[&str] = &["teal", "amber", "crimson", "indigo"];

/// The epoch generated records are created after.
pub fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
        .single()
        .expect("valid date")
}

/// A record as the sandbox stores it: an id, a version and the canonical fields.
#[derive(Debug, Clone)]
pub struct Stored {
    pub id: u64,
    /// When the record entered the provider's system (what an as-of-entry snapshot
    /// filters by): its creation time for the seeded records, the moment of creation for
    /// records created later.
    pub entered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: u64,
    pub canonical: Value,
}

fn pick<'a>(rng: &mut StdRng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

/// The canonical record number `id` (1-based) of a resource.
pub fn generate(seed: u64, resource: &str, id: u64) -> Stored {
    let salt = resource
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    let mut rng =
        StdRng::seed_from_u64(seed ^ salt.rotate_left(17) ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let created = base_time() + Duration::minutes(id as i64 * 7);
    let updated = created + Duration::minutes(rng.random_range(0..600));
    let mut stored = Stored {
        id,
        entered_at: created,
        updated_at: updated,
        version: 1,
        canonical: Value::Null,
    };
    let first = pick(&mut rng, FIRST);
    let last = pick(&mut rng, LAST);
    let company = pick(&mut rng, COMPANIES);
    let (city, country) = CITIES[rng.random_range(0..CITIES.len())];
    let amount = (rng.random_range(1_000..500_000) as f64) / 100.0;
    stored.canonical = json!({
        "first_name": first,
        "last_name": last,
        "name": format!("{first} {last}"),
        "email": format!("{}.{}{}@example.com", first.to_lowercase(), last.to_lowercase(), id),
        "phone": format!("+1555{:07}", rng.random_range(0..10_000_000)),
        "title": pick(&mut rng, TITLES),
        "department": pick(&mut rng, DEPARTMENTS),
        "company": format!("{company} {}", id % 17),
        "company_id": format!("{}", 1000 + id % 17),
        "owner_id": format!("{}", 500 + id % 5),
        "manager_id": if id > 1 { json!(format!("{}", 1 + id % (id - 1).max(1))) } else { Value::Null },
        "city": city,
        "country": country,
        "street": format!("{} Market Street", rng.random_range(1..400)),
        "postal_code": format!("{:05}", rng.random_range(10_000..99_999)),
        "domain": format!("{}{}.example.com", company.split(' ').next().unwrap_or("co").to_lowercase(), id % 17),
        "industry": pick(&mut rng, &["Software", "Retail", "Finance", "Health"]),
        "employees": rng.random_range(5..5000),
        "amount": amount,
        "currency": "USD",
        "stage": pick(&mut rng, STAGES),
        "probability": rng.random_range(0..=100),
        "close_date": (created + Duration::days(rng.random_range(10..120))).format("%Y-%m-%d").to_string(),
        "subject": format!("Issue #{id}: {} cannot sign in", first),
        "description": format!("Reported by {first} {last} from {company}."),
        "status": pick(&mut rng, TICKET_STATUS),
        "priority": pick(&mut rng, PRIORITIES),
        "tags": [pick(&mut rng, &["vip", "billing", "bug", "onboarding"])],
        "employee_number": format!("E{:05}", id),
        "start_date": (created - Duration::days(rng.random_range(30..2000))).format("%Y-%m-%d").to_string(),
        "active": rng.random_bool(0.9),
        "balance": (rng.random_range(0..100_000) as f64) / 100.0,
        "invoice_number": format!("INV-{:05}", id),
        "due_date": (created + Duration::days(30)).format("%Y-%m-%d").to_string(),
        "txn_date": created.format("%Y-%m-%d").to_string(),
        "quantity": rng.random_range(1..20),
        "favorite_color": pick(&mut rng, COLORS),
        "tier": pick(&mut rng, &["gold", "silver", "bronze"]),
    });
    refresh_times(&mut stored, created);
    stored
}

/// Write the id and timestamps (in the formats profiles need) into the canonical record.
pub fn refresh_times(stored: &mut Stored, created: DateTime<Utc>) {
    let u = stored.updated_at;
    let obj = stored
        .canonical
        .as_object_mut()
        .expect("canonical is an object");
    obj.insert("id".into(), json!(stored.id));
    obj.insert("version".into(), json!(stored.version));
    obj.insert(
        "created_at".into(),
        json!(created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
    );
    obj.insert("created_ms".into(), json!(created.timestamp_millis()));
    obj.insert(
        "updated_at".into(),
        json!(u.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
    );
    obj.insert(
        "updated_at_s".into(),
        json!(u.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    );
    obj.insert("updated_ms".into(), json!(u.timestamp_millis()));
    obj.insert("updated_s".into(), json!(u.timestamp()));
    obj.insert(
        "updated_sf".into(),
        json!(u.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()),
    );
    obj.insert(
        "updated_naive".into(),
        json!(u.format("%Y-%m-%d %H:%M:%S").to_string()),
    );
    obj.insert(
        "updated_qb".into(),
        json!(u.format("%Y-%m-%dT%H:%M:%S-00:00").to_string()),
    );
}

/// Change a record: new version, new update time, and a visibly different field.
pub fn touch(stored: &mut Stored, now: DateTime<Utc>) {
    stored.version += 1;
    stored.updated_at = now.max(stored.updated_at + Duration::seconds(1));
    let created = base_time() + Duration::minutes(stored.id as i64 * 7);
    if let Some(obj) = stored.canonical.as_object_mut() {
        obj.insert(
            "title".into(),
            json!(format!(
                "{} v{}",
                TITLES[stored.id as usize % TITLES.len()],
                stored.version
            )),
        );
        obj.insert(
            "subject".into(),
            json!(format!(
                "Issue #{} (revision {})",
                stored.id, stored.version
            )),
        );
    }
    refresh_times(stored, created);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_varies_by_id() {
        let a = generate(7, "contacts", 3);
        let b = generate(7, "contacts", 3);
        let c = generate(7, "contacts", 4);
        assert_eq!(a.canonical, b.canonical);
        assert_ne!(a.canonical, c.canonical);
        assert_ne!(generate(8, "contacts", 3).canonical, a.canonical);
    }
}
