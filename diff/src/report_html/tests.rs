use super::plots::percentile_svg;
use super::*;
use crate::config::{DiffOptions, RulesFile};
use crate::engine::Differ;
use bytes::Bytes;
use tapedeck_storage::{Exchange, Header};

const EVIL: &str = "</script><img src=x onerror=alert(1)>";

fn row(origin: u128, target: &str, body: String, total_us: i64) -> Exchange {
    Exchange {
        path: "/api/items/7".into(),
        query: Some("q=<b>".into()),
        status: Some(200),
        total_us: Some(total_us),
        resp_headers: vec![Header::new("content-type", "application/json")],
        resp_body: Bytes::from(body),
        origin_id: Some(uuid::Uuid::from_u128(origin)),
        target: Some(target.into()),
        ..Exchange::default()
    }
}

/// 200 origins; the candidate changes `$.name` (which holds markup) and is 3× slower.
fn outcome(candidate_differs: bool) -> DiffOutcome {
    let rows: Vec<Exchange> = (0..200u128)
        .flat_map(|i| {
            let t = 10_000 + (i % 13) as i64 * 150;
            let body = |v: &str| serde_json::json!({"id": i as u64, "name": v}).to_string();
            [
                row(i, "baseline", body(EVIL), t),
                row(
                    i,
                    "candidate",
                    body(if candidate_differs {
                        "<i>changed</i>"
                    } else {
                        EVIL
                    }),
                    if candidate_differs { t * 3 } else { t },
                ),
            ]
        })
        .collect();
    let config = DiffOptions::new("/mem")
        .validate_with(RulesFile::default())
        .expect("valid");
    Differ::new(config).run_exchanges(rows).expect("judged")
}

#[test]
fn escapes_text_from_traffic() {
    assert_eq!(
        escape("<a href=\"x\">'&'</a>"),
        "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
    );
    let o = outcome(true);
    assert_eq!(o.verdict, Verdict::Fail);
    let page = html(&o);
    assert!(!page.contains("<img"), "raw markup from a body leaked");
    assert!(!page.contains("</script>"));
    assert!(!page.contains("<i>changed"));
    assert!(page.contains("&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"));
    assert!(page.contains("&lt;i&gt;changed&lt;/i&gt;"));
}

#[test]
fn is_self_contained() {
    let page = html(&outcome(true));
    let lower = page.to_ascii_lowercase();
    for bad in [
        "<script", "<link", "<img", "<iframe", "<object", "<embed", "@import", "url(", "src=\"",
        "href=\"", "src='", "href='",
    ] {
        assert!(!lower.contains(bad), "report.html contains {bad:?}");
    }
    // URLs may appear only as escaped text (the curl command), never in markup.
    for (i, _) in lower.match_indices("http") {
        let before = &lower[..i];
        assert!(
            !before.ends_with('"') && !before.ends_with('\'') && !before.ends_with('('),
            "resource reference near {:?}",
            &page[i.saturating_sub(40)..(i + 40).min(page.len())]
        );
    }
    assert!(lower.contains("content-security-policy"));
    assert!(page.contains("<svg"), "plots are inline SVG");
}

#[test]
fn banner_says_the_verdict() {
    let fail = html(&outcome(true));
    assert!(fail.contains("<header class=\"banner fail\""));
    assert!(fail.contains("<div class=\"verdict\">FAIL</div>"));
    assert!(fail.contains("ROLL BACK"));
    let pass = outcome(false);
    assert_eq!(pass.verdict, Verdict::Pass);
    let pass = html(&pass);
    assert!(pass.contains("<header class=\"banner pass\""));
    assert!(pass.contains("<div class=\"verdict\">PASS</div>"));
    assert!(pass.contains("rollback: no"));
    assert!(!pass.contains("ROLL BACK"));
}

#[test]
fn plots_both_sides() {
    let o = outcome(true);
    let svg = percentile_svg(&o.routes[0].latency, "r");
    assert!(svg.contains("class=\"b\"") && svg.contains("class=\"c\""));
    assert!(svg.contains("baseline p50"));
    let empty = percentile_svg(&LatencyReport::default(), "none");
    assert!(empty.contains("no latency data"));
}
