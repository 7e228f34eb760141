//! Where the HTTP API keys come from.
//!
//! Keys given by flag, environment or config are used as they are. With none configured
//! at all, the first start generates a key, stores it in `<data_dir>/api-key` (mode 0600)
//! and prints it once; later starts read it back without printing it.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::Path;

/// Name of the generated key file inside the data directory.
pub const KEY_FILE: &str = "api-key";

/// The outcome of resolving keys.
#[derive(Debug)]
pub struct Resolved {
    /// Keys to accept.
    pub keys: HashSet<String>,
    /// A key generated on this start (to be printed once).
    pub generated: Option<String>,
}

/// Generates a random 32-byte key, hex-encoded.
pub fn generate() -> std::io::Result<String> {
    let mut buf = [0u8; 32];
    getrandom::fill(&mut buf).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Resolves the effective keys.
pub fn resolve(configured: &[String], data_dir: &Path) -> std::io::Result<Resolved> {
    if !configured.is_empty() {
        return Ok(Resolved { keys: configured.iter().cloned().collect(), generated: None });
    }
    let path = data_dir.join(KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let key = text.trim().to_owned();
            if key.len() < 16 {
                return Err(std::io::Error::other(format!("{} holds no valid key", path.display())));
            }
            Ok(Resolved { keys: HashSet::from([key]), generated: None })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir)?;
            let key = generate()?;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&path)?;
            writeln!(f, "{key}")?;
            Ok(Resolved { keys: HashSet::from([key.clone()]), generated: Some(key) })
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_then_reads_back() {
        let dir = std::env::temp_dir().join(format!("tether-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = resolve(&[], &dir).unwrap();
        let key = first.generated.unwrap();
        assert_eq!(key.len(), 64);
        let second = resolve(&[], &dir).unwrap();
        assert!(second.generated.is_none());
        assert!(second.keys.contains(&key));
        let explicit = resolve(&["k".repeat(16)], &dir).unwrap();
        assert!(!explicit.keys.contains(&key));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
