//! Static replicas given on the command line: `--backend <servedName>=<http://host:port>`.

use std::collections::BTreeMap;

/// Parses `--backend <servedName>=<http://host:port>`.
pub fn parse_backend(text: &str) -> Result<(String, String), String> {
    let (name, url) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not <servedName>=<http://host:port>"))?;
    let url = url.trim().trim_end_matches('/');
    let authority = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("backend {url:?} must start with http://"))?;
    if name.trim().is_empty() || authority.is_empty() || authority.contains('/') {
        return Err(format!("{text:?} is not <servedName>=<http://host:port>"));
    }
    Ok((name.trim().to_string(), url.to_string()))
}

/// Groups `--backend` values by served name.
pub fn group_backends(pairs: &[(String, String)]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, url) in pairs {
        out.entry(name.clone()).or_default().push(url.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_parse_and_group() {
        assert_eq!(
            parse_backend("m=http://127.0.0.1:8101/"),
            Ok(("m".to_string(), "http://127.0.0.1:8101".to_string()))
        );
        assert!(parse_backend("m").is_err());
        assert!(parse_backend("m=https://x:1").is_err());
        let grouped = group_backends(&[
            ("m".into(), "http://a:1".into()),
            ("m".into(), "http://b:1".into()),
        ]);
        assert_eq!(grouped["m"].len(), 2);
    }
}
