//! `palisade policy validate|apply|delete|list`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use palisade_api::{Request, Response};
use palisade_policies::Resource;

use super::{output, unexpected, CliError, Ctx, OutputFormat};

/// Reads a file, or stdin for `-`.
pub(super) fn read_source(path: &Path) -> Result<(String, String), CliError> {
    let read_err = |source| CliError::Read {
        path: path.to_owned(),
        source,
    };
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(read_err)?;
        Ok(("-".to_owned(), text))
    } else {
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        Ok((path.display().to_string(), text))
    }
}

fn kind_name(r: &Resource) -> &'static str {
    match r {
        Resource::NetworkPolicy(_) => "NetworkPolicy",
        Resource::CiliumNetworkPolicy(_) => "CiliumNetworkPolicy",
        Resource::CiliumClusterwideNetworkPolicy(_) => "CiliumClusterwideNetworkPolicy",
        Resource::Namespace { .. } => "Namespace",
    }
}

/// `3 NetworkPolicy, 1 Namespace`.
fn counts(resources: &[Resource]) -> BTreeMap<&'static str, usize> {
    let mut c = BTreeMap::new();
    for r in resources {
        *c.entry(kind_name(r)).or_insert(0) += 1;
    }
    c
}

pub(super) fn validate(ctx: &mut Ctx<'_>, files: &[PathBuf]) -> Result<bool, CliError> {
    let mut all_ok = true;
    let mut report = Vec::new();
    for file in files {
        let (source, text) = read_source(file)?;
        match palisade_policies::parse_documents(&text, &source) {
            Ok(resources) => {
                let c = counts(&resources);
                if ctx.format == OutputFormat::Human {
                    let summary = if c.is_empty() {
                        "no documents".to_owned()
                    } else {
                        c.iter()
                            .map(|(k, n)| format!("{n} {k}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    ctx.print(&format!("OK     {source}: {summary}\n"))?;
                }
                report.push(serde_json::json!({"file": source, "ok": true, "counts": c}));
            }
            Err(e) => {
                all_ok = false;
                if ctx.format == OutputFormat::Human {
                    ctx.print(&format!("ERROR  {e}\n"))?;
                }
                report
                    .push(serde_json::json!({"file": source, "ok": false, "error": e.to_string()}));
            }
        }
    }
    if ctx.format == OutputFormat::Json {
        ctx.print(&output::json(&report))?;
    }
    Ok(all_ok)
}

pub(super) fn apply(ctx: &mut Ctx<'_>, files: &[PathBuf]) -> Result<bool, CliError> {
    // Read everything first: a missing file applies nothing.
    let sources = files
        .iter()
        .map(|f| read_source(f))
        .collect::<Result<Vec<_>, _>>()?;
    let mut report = Vec::new();
    for (source, yaml) in sources {
        let summary = match ctx.call(&Request::PolicyApply {
            source: source.clone(),
            yaml,
        }) {
            Ok(Response::Applied { summary }) => summary,
            Ok(other) => return Err(unexpected("policy apply", other)),
            Err(e) => {
                if !report.is_empty() && ctx.format == OutputFormat::Human {
                    ctx.print("(the files above were applied; the ones from here on were not)\n")?;
                }
                return Err(e);
            }
        };
        if ctx.format == OutputFormat::Human {
            ctx.print(&output::applied(&source, &summary))?;
        }
        report.push(serde_json::json!({"source": source, "summary": summary}));
    }
    if ctx.format == OutputFormat::Json {
        ctx.print(&output::json(&report))?;
    }
    Ok(true)
}

pub(super) fn delete(
    ctx: &mut Ctx<'_>,
    kind: &str,
    name: &str,
    namespace: Option<&str>,
) -> Result<bool, CliError> {
    match ctx.call(&Request::PolicyDelete {
        kind: kind.to_owned(),
        namespace: namespace.map(str::to_owned),
        name: name.to_owned(),
    })? {
        Response::Done | Response::Applied { .. } => {}
        other => return Err(unexpected("policy delete", other)),
    }
    let full = match namespace {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    };
    let text = match ctx.format {
        OutputFormat::Human => format!("deleted {full}\n"),
        OutputFormat::Json => output::json(&serde_json::json!({
            "deleted": {"kind": kind, "namespace": namespace, "name": name}
        })),
    };
    ctx.print(&text)?;
    Ok(true)
}

pub(super) fn list(ctx: &mut Ctx<'_>) -> Result<bool, CliError> {
    let policies = match ctx.call(&Request::PolicyList)? {
        Response::Policies { policies } => policies,
        other => return Err(unexpected("policy list", other)),
    };
    let text = match ctx.format {
        OutputFormat::Human => output::policies(&policies),
        OutputFormat::Json => output::json(&policies),
    };
    ctx.print(&text)?;
    Ok(true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use palisade_api::Client;

    fn validate_files(files: &[(&str, &str)], format: OutputFormat) -> (bool, String) {
        let dir = std::env::temp_dir().join(format!(
            "palisade-cli-validate-{}-{}",
            std::process::id(),
            files.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let paths: Vec<PathBuf> = files
            .iter()
            .map(|(name, text)| {
                let p = dir.join(name);
                std::fs::write(&p, text).unwrap();
                p
            })
            .collect();
        let mut out = Vec::new();
        let mut ctx = Ctx {
            client: Client::new("/nonexistent"),
            format,
            out: &mut out,
        };
        let ok = validate(&mut ctx, &paths).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        (ok, String::from_utf8(out).unwrap())
    }

    const GOOD: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-all
  namespace: default
spec:
  podSelector: {}
  policyTypes: [Ingress]
---
apiVersion: v1
kind: Namespace
metadata:
  name: prod
  labels:
    env: prod
";

    #[test]
    fn validate_reports_counts_and_errors() {
        let (ok, out) = validate_files(&[("good.yaml", GOOD)], OutputFormat::Human);
        assert!(ok, "{out}");
        assert!(
            out.contains("OK") && out.contains("1 NetworkPolicy") && out.contains("1 Namespace"),
            "{out}"
        );

        let (ok, out) = validate_files(
            &[
                ("good.yaml", GOOD),
                (
                    "bad.yaml",
                    "kind: Frobnicator\napiVersion: x/v1\nmetadata: {name: a}\n",
                ),
            ],
            OutputFormat::Human,
        );
        assert!(!ok);
        assert!(out.contains("ERROR") && out.contains("bad.yaml"), "{out}");

        let (ok, out) = validate_files(&[("bad.yaml", ": : :")], OutputFormat::Json);
        assert!(!ok);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v[0]["ok"], false);
    }

    #[test]
    fn missing_file_is_named() {
        let mut out = Vec::new();
        let mut ctx = Ctx {
            client: Client::new("/nonexistent"),
            format: OutputFormat::Human,
            out: &mut out,
        };
        let e = apply(&mut ctx, &[PathBuf::from("/nonexistent/p.yaml")]).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/p.yaml"), "{e}");
    }
}
