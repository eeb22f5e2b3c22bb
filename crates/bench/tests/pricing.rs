//! The catalog, price overrides and the cost arithmetic.

use accelrt_bench::catalog::{resolve_price, Catalog, PriceOverrides};
use accelrt_bench::limits::Limit;
use accelrt_bench::result::usd_per_million;

#[test]
fn cost_per_million_inferences() {
    // $3.60/h at 1,000 inferences/s: 3.6e6 inferences per dollar-hour… = $1 per 1M.
    assert!((usd_per_million(3.6, 1000.0).unwrap() - 1.0).abs() < 1e-12);
    assert!((usd_per_million(0.7582, 250.0).unwrap() - 0.7582e6 / 900_000.0).abs() < 1e-12);
    assert_eq!(usd_per_million(1.0, 0.0), None);
}

#[test]
fn the_catalog_holds_every_reference_instance_with_dated_prices() {
    let c = Catalog::builtin();
    for t in [
        "c7i.xlarge",
        "c7i.2xlarge",
        "g4dn.xlarge",
        "g5.xlarge",
        "g6.xlarge",
        "g6e.xlarge",
        "p3.2xlarge",
        "p4d.24xlarge",
        "p5.48xlarge",
        "inf1.xlarge",
        "inf2.xlarge",
        "inf2.8xlarge",
        "inf2.48xlarge",
        "trn1.2xlarge",
        "trn1.32xlarge",
        "trn2.48xlarge",
    ] {
        let i = c.get(t).unwrap_or_else(|| panic!("{t} missing"));
        for p in &i.prices {
            assert!(Limit::PRICE_PER_HOUR.check(p.usd_per_hour).is_ok(), "{t}: {p:?}");
            assert!(!p.source.is_empty() && !p.date_read.is_empty(), "{t}: {p:?}");
        }
    }
    assert_eq!(c.instances.len(), 16);
    assert_eq!(
        c.get("inf2.xlarge").unwrap().prices.iter().find(|p| p.basis == "on-demand").unwrap().usd_per_hour,
        0.7582
    );
    assert_eq!(
        c.get("inf2.xlarge").unwrap().prices.iter().find(|p| p.basis == "reserved-1yr").unwrap().usd_per_hour,
        0.328
    );
    assert!(c.get("trn2.48xlarge").unwrap().prices.is_empty(), "no published on-demand price, none invented");
    assert_eq!(c.get("p5.48xlarge").unwrap().accelerator.as_ref().unwrap().count, 8);
}

#[test]
fn price_precedence_is_flag_then_file_then_catalog() {
    let c = Catalog::builtin();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prices.json");
    std::fs::write(
        &path,
        r#"{"prices": [{"instance_type": "inf2.xlarge", "basis": "spot", "usd_per_hour": 0.23,
        "source": "our spot quote", "date_read": "2026-11-28"}]}"#,
    )
    .unwrap();
    let o = PriceOverrides::load(&path).unwrap();

    let p = resolve_price(&c, Some(&o), Some(0.5), Some("inf2.xlarge"), "on-demand").unwrap();
    assert_eq!((p.usd_per_hour, p.basis.as_str()), (0.5, "user"));
    let p = resolve_price(&c, Some(&o), None, Some("inf2.xlarge"), "on-demand").unwrap();
    assert_eq!((p.usd_per_hour, p.source.as_str()), (0.23, "our spot quote"));
    let p = resolve_price(&c, Some(&o), None, Some("g5.xlarge"), "on-demand").unwrap();
    assert_eq!(p.usd_per_hour, 1.006);
    let p = resolve_price(&c, None, None, Some("inf2.xlarge"), "reserved-1yr").unwrap();
    assert_eq!(p.usd_per_hour, 0.328);
    assert!(resolve_price(&c, None, None, Some("trn2.48xlarge"), "on-demand").is_none());
    assert!(resolve_price(&c, None, None, None, "on-demand").is_none());
    assert!(resolve_price(&c, None, None, Some("x9.huge"), "on-demand").is_none());
}

#[test]
fn bad_override_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prices.json");
    std::fs::write(
        &path,
        r#"{"prices": [{"instance_type": "a.b", "basis": "x", "usd_per_hour": -1, "source": "s", "date_read": "d"}]}"#,
    )
    .unwrap();
    let err = PriceOverrides::load(&path).unwrap_err().to_string();
    assert!(err.contains("prices[0].usd_per_hour") && err.contains("(got -1)"), "{err}");
    // Too small to be a price (a denormal), zero, and absurdly large are refused the same way.
    for bad in ["1e-320", "0", "1e300"] {
        std::fs::write(
            &path,
            format!(
                r#"{{"prices": [{{"instance_type": "a.b", "basis": "x", "usd_per_hour": {bad}, "source": "s", "date_read": "d"}}]}}"#
            ),
        )
        .unwrap();
        let err = PriceOverrides::load(&path).unwrap_err().to_string();
        assert!(err.contains("prices.json") && err.contains("usd_per_hour"), "{bad}: {err}");
    }
    // An unreadable date is refused when the file is read, as the catalog's are.
    std::fs::write(
        &path,
        r#"{"prices": [{"instance_type": "a.b", "basis": "x", "usd_per_hour": 1, "source": "s", "date_read": "last week"}]}"#,
    )
    .unwrap();
    let err = PriceOverrides::load(&path).unwrap_err().to_string();
    assert!(err.contains("prices[0].date_read") && err.contains("last week"), "{err}");
    std::fs::write(&path, "{").unwrap();
    assert!(PriceOverrides::load(&path).is_err());
    assert!(PriceOverrides::load(&dir.path().join("missing.json")).is_err());
}
