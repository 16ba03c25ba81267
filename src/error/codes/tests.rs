//! The table against the documents clients read: docs/api.md and openapi.yaml.

use std::collections::{BTreeMap, BTreeSet};

use super::{Code, Scope};

const API_MD: &str = include_str!("../../../docs/api.md");
const OPENAPI: &str = include_str!("../../../openapi.yaml");

/// The rows of the markdown table that follows the line starting with `intro`:
/// code → the statuses its row gives.
fn doc_table(intro: &str) -> BTreeMap<String, BTreeSet<u16>> {
    let section = API_MD
        .split_once("## Error codes")
        .expect("docs/api.md has an Error codes section")
        .1;
    let start = section
        .lines()
        .position(|l| l.starts_with(intro))
        .unwrap_or_else(|| panic!("docs/api.md: no line starting {intro:?}"));
    let mut rows = BTreeMap::new();
    let lines = section
        .lines()
        .skip(start + 1)
        .skip_while(|l| !l.starts_with('|'));
    for line in lines.take_while(|l| l.starts_with('|')).skip(2) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let codes: Vec<String> = cells[1]
            .split(", ")
            .map(|c| c.trim_matches('`').to_owned())
            .collect();
        let statuses: Vec<&str> = cells[2].split(", ").collect();
        let paired = statuses.len() == codes.len();
        for (i, code) in codes.iter().enumerate() {
            let cell = if paired { statuses[i] } else { cells[2] };
            let set: BTreeSet<u16> = cell
                .split(['/', ','])
                .map(|s| {
                    s.trim()
                        .parse()
                        .unwrap_or_else(|_| panic!("status {s:?} of {code}"))
                })
                .collect();
            assert!(
                rows.insert(code.clone(), set).is_none(),
                "{code} listed twice"
            );
        }
    }
    rows
}

/// The values of the openapi.yaml enum under the schema `name`.
fn openapi_enum(name: &str) -> BTreeSet<String> {
    let after = OPENAPI
        .split_once(&format!("    {name}:\n"))
        .unwrap_or_else(|| panic!("openapi.yaml has no schema {name}"))
        .1;
    let list = after.split_once("enum: [").expect("an enum").1;
    let list = list.split_once(']').expect("a closed enum").0;
    list.split(',').map(|s| s.trim().to_owned()).collect()
}

fn table(scope: fn(Scope) -> bool) -> BTreeSet<String> {
    Code::ALL
        .iter()
        .filter(|c| scope(c.scope()))
        .map(|c| c.as_str().to_owned())
        .collect()
}

/// Equal sets, or a message naming what each side lacks.
fn assert_same(document: BTreeSet<String>, table: BTreeSet<String>, what: &str) {
    let missing: Vec<_> = table.difference(&document).collect();
    let extra: Vec<_> = document.difference(&table).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: lacks {missing:?}; lists codes the table does not have: {extra:?}"
    );
}

fn check_doc(intro: &str, scope: fn(Scope) -> bool) {
    let doc = doc_table(intro);
    let documented: BTreeSet<String> = doc.keys().cloned().collect();
    assert_eq!(
        documented,
        table(scope),
        "docs/api.md {intro:?} table vs Code"
    );
    for code in Code::ALL.iter().filter(|c| scope(c.scope())) {
        let statuses = &doc[code.as_str()];
        assert!(
            statuses.contains(&code.status()),
            "{code}: docs/api.md says {statuses:?}, the table {}",
            code.status()
        );
        if *code != Code::EventsRejected {
            assert_eq!(statuses.len(), 1, "{code} has one status");
        }
    }
}

#[test]
fn codes_are_unique() {
    let names: BTreeSet<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(names.len(), Code::ALL.len());
}

#[test]
fn docs_api_md_lists_every_request_code_with_its_status() {
    check_doc("Request level", Scope::request);
}

#[test]
fn docs_api_md_lists_every_event_code_with_its_status() {
    check_doc("Per event", Scope::event);
}

#[test]
fn openapi_enums_are_the_table() {
    assert_same(
        openapi_enum("RequestErrorCode"),
        table(Scope::request),
        "openapi.yaml's RequestErrorCode",
    );
    assert_same(
        openapi_enum("EventErrorCode"),
        table(Scope::event),
        "openapi.yaml's EventErrorCode",
    );
}
