//! `hf:<org>/<name>[@revision]`: a Hugging Face model through hf-hub 1.0 and its standard cache
//! (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`; `HF_TOKEN` for
//! private models). The cache is tried first, with no network; a miss goes to the hub; when
//! that fails too, the error says how to pre-fetch. The files end up in one snapshot
//! directory, which the Hugging Face directory loader then reads. `HF_HUB_OFFLINE=1` skips the
//! hub, as in the Python tools.

use std::path::PathBuf;

use hf_hub::{HFClient, HFError};

use super::error::ModelError;

/// A parsed `hf:` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubId {
    /// Organisation or user.
    pub owner: String,
    /// Repository name.
    pub name: String,
    /// Revision (branch, tag or commit); the main branch when absent.
    pub revision: Option<String>,
}

impl HubId {
    /// Parses `org/name[@revision]` (the part after `hf:`).
    pub fn parse(s: &str) -> Result<Self, ModelError> {
        let (repo, revision) = match s.split_once('@') {
            Some((r, rev)) if !rev.is_empty() => (r, Some(rev.to_string())),
            Some(_) => return Err("an empty revision after `@`".into()),
            None => (s, None),
        };
        match repo.split_once('/') {
            Some((o, n)) if !o.is_empty() && !n.is_empty() && !n.contains('/') => Ok(HubId {
                owner: o.to_string(),
                name: n.to_string(),
                revision,
            }),
            _ => Err(format!("`{s}` is not of the form <org>/<name>[@revision]").into()),
        }
    }

    fn repo_id(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

/// Resolves the model's files and returns the snapshot directory that holds them.
pub fn snapshot_dir(id: &HubId) -> Result<PathBuf, ModelError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ModelError::Io(format!("cannot start the runtime: {e}")))?;
    rt.block_on(fetch(id))
}

/// One file: from the cache with no network, else from the hub. `Ok(None)`: the repository
/// has no such file.
async fn get(
    repo: &hf_hub::HFRepository<hf_hub::RepoTypeModel>,
    id: &HubId,
    cache: &std::path::Path,
    file: &str,
) -> Result<Option<PathBuf>, ModelError> {
    let cached = repo
        .download_file()
        .filename(file)
        .maybe_revision(id.revision.clone())
        .local_files_only(true);
    match cached.send().await {
        Ok(p) => return Ok(Some(p)),
        Err(HFError::LocalEntryNotFound { .. }) => {}
        Err(e) => return Err(ModelError::Io(format!("{file}: {e}"))),
    }
    // HF_HUB_OFFLINE=1, as in the Python tools: the cache or nothing.
    let offline =
        std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if offline {
        return Err(ModelError::Io(miss(
            file,
            cache,
            id,
            "HF_HUB_OFFLINE is set",
        )));
    }
    let online = repo
        .download_file()
        .filename(file)
        .maybe_revision(id.revision.clone());
    match online.send().await {
        Ok(p) => Ok(Some(p)),
        Err(HFError::EntryNotFound { .. }) => Ok(None),
        Err(e) => Err(ModelError::Io(miss(
            file,
            cache,
            id,
            &format!("it could not be downloaded ({e})"),
        ))),
    }
}

/// A cache miss that cannot be fetched, in words, with how to pre-fetch.
fn miss(file: &str, cache: &std::path::Path, id: &HubId, why: &str) -> String {
    let rev = id
        .revision
        .as_ref()
        .map(|r| format!(" --revision {r}"))
        .unwrap_or_default();
    format!(
        "{file} is not in the Hugging Face cache ({}) and {why}; pre-fetch it where the hub is \
         reachable, for example `huggingface-cli download {}{rev}`, and bring that cache here \
         (HF_HOME or HF_HUB_CACHE point to it)",
        cache.display(),
        id.repo_id()
    )
}

async fn fetch(id: &HubId) -> Result<PathBuf, ModelError> {
    let client = HFClient::new().map_err(|e| ModelError::Io(format!("hf-hub: {e}")))?;
    let cache = client.cache_dir().to_path_buf();
    let repo = client.model(id.owner.clone(), id.name.clone());
    let config = get(&repo, id, &cache, "config.json")
        .await?
        .ok_or("the repository has no config.json")?;
    get(&repo, id, &cache, "tokenizer.json")
        .await?
        .ok_or("the repository has no tokenizer.json")?;
    if get(&repo, id, &cache, "model.safetensors").await?.is_none() {
        let index = get(&repo, id, &cache, "model.safetensors.index.json")
            .await?
            .ok_or(
                "the repository has neither model.safetensors nor model.safetensors.index.json",
            )?;
        #[derive(serde::Deserialize)]
        struct Index {
            weight_map: std::collections::BTreeMap<String, String>,
        }
        let text = std::fs::read_to_string(&index)
            .map_err(|e| ModelError::Io(format!("{}: {e}", index.display())))?;
        let idx: Index =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", index.display()))?;
        let shards: std::collections::BTreeSet<String> = idx.weight_map.into_values().collect();
        for shard in shards {
            get(&repo, id, &cache, &shard)
                .await?
                .ok_or_else(|| format!("shard {shard} is missing"))?;
        }
    }
    config
        .parent()
        .map(PathBuf::from)
        .ok_or_else(|| ModelError::Io("the snapshot directory has no parent".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse() {
        assert_eq!(
            HubId::parse("HuggingFaceTB/SmolLM2-135M@main").unwrap(),
            HubId {
                owner: "HuggingFaceTB".into(),
                name: "SmolLM2-135M".into(),
                revision: Some("main".into())
            }
        );
        assert_eq!(HubId::parse("a/b").unwrap().revision, None);
        for bad in ["a", "a/", "/b", "a/b/c", "a/b@"] {
            assert!(HubId::parse(bad).is_err(), "{bad}");
        }
    }
}
