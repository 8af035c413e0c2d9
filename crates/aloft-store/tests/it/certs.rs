//! Certificates of custom hostnames: one row per hostname, replaced in place, listed per app,
//! kept across a reopen and removed with their app.

use aloft_store::{CertificateRow, Durability, Store};

fn cert(hostname: &str, app: &str, at: &str) -> CertificateRow {
    CertificateRow {
        hostname: hostname.into(),
        app: app.into(),
        source: "self-signed".into(),
        status: "ready".into(),
        chain_pem: Some("chain".into()),
        key_pem: Some("key".into()),
        not_before: Some("2026-01-01T00:00:00Z".into()),
        not_after: Some("2027-01-01T00:00:00Z".into()),
        created_at: at.into(),
        updated_at: at.into(),
    }
}

#[test]
fn certificates_by_hostname_survive_a_reopen_and_go_with_their_app() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let s = Store::open(&path, Durability::ProcessCrash).unwrap();
        s.write(|tx| {
            tx.insert_app(&crate::common::app_with_status("a", "deployed"))?;
            tx.insert_app(&crate::common::app_with_status("b", "deployed"))?;
            tx.put_certificate(&cert("www.a.example", "a", "t1"))?;
            tx.put_certificate(&cert("api.a.example", "a", "t1"))?;
            tx.put_certificate(&cert("b.example", "b", "t1"))?;
            // Replacing keeps the first created_at.
            let mut again = cert("www.a.example", "a", "t2");
            again.source = "files".into();
            tx.put_certificate(&again)
        })
        .unwrap();
    }
    let s = Store::open(&path, Durability::ProcessCrash).unwrap();
    s.read(|tx| {
        let a: Vec<String> = tx
            .certificates(Some("a"))?
            .into_iter()
            .map(|c| c.hostname)
            .collect();
        assert_eq!(a, ["api.a.example", "www.a.example"]);
        assert_eq!(tx.certificates(None)?.len(), 3);
        let www = tx.certificate("www.a.example")?.unwrap();
        assert_eq!(
            (
                www.source.as_str(),
                www.created_at.as_str(),
                www.updated_at.as_str()
            ),
            ("files", "t1", "t2")
        );
        assert!(!tx.delete_certificate("b", "api.a.example")?, "not b's");
        Ok(())
    })
    .unwrap();
    s.write(|tx| {
        assert!(tx.delete_certificate("a", "api.a.example")?);
        tx.delete_app("a")?;
        Ok(())
    })
    .unwrap();
    s.read(|tx| {
        let left: Vec<String> = tx
            .certificates(None)?
            .into_iter()
            .map(|c| c.hostname)
            .collect();
        assert_eq!(left, ["b.example"]);
        Ok(())
    })
    .unwrap();
}
