//! Account rules: what a user name, password and email must look like.
//!
//! The defaults are sockey's (`docs/auth.md` § Rules), and the error messages are the ones
//! sockey meant to send but never delivered (its validation paths crashed the socket).
//! Where sockey's code and its own messages disagreed (password length 5 vs "6", letters
//! not actually required), Tether follows the messages, so every message is true.

use regex::Regex;
use tether_proto::{ErrorCode, ProtoError};

use crate::config::AccountsConfig;

/// Special characters sockey's rules know.
pub const SPECIALS: &str = "!@#$%^&*";

/// Compiled account rules.
#[derive(Debug, Clone)]
pub struct Rules {
    cfg: AccountsConfig,
    username: Regex,
    password: Regex,
}

fn invalid(code: ErrorCode, message: impl Into<String>) -> ProtoError {
    ProtoError::new(code, message)
}

impl Rules {
    /// Compiles the configured patterns; the error names the bad option.
    pub fn new(cfg: &AccountsConfig) -> Result<Self, String> {
        let username =
            Regex::new(&cfg.username_pattern).map_err(|e| format!("auth.accounts.username_pattern: {e}"))?;
        let password =
            Regex::new(&cfg.password_pattern).map_err(|e| format!("auth.accounts.password_pattern: {e}"))?;
        Ok(Self { cfg: cfg.clone(), username, password })
    }

    /// Checks a user name for registration.
    pub fn username(&self, name: &str) -> Result<(), ProtoError> {
        let c = &self.cfg;
        if name.is_empty() {
            return Err(invalid(ErrorCode::InvalidUsername, "You need to fill in a name."));
        }
        let n = name.chars().count();
        if n < c.username_min || n > c.username_max {
            return Err(invalid(
                ErrorCode::InvalidUsername,
                format!("User name must be between {} and {} Characters..", c.username_min, c.username_max),
            ));
        }
        if !self.username.is_match(name) || name.chars().any(char::is_control) {
            return Err(invalid(
                ErrorCode::InvalidUsername,
                "Usernames may contain letters, special characters and numbers.",
            ));
        }
        Ok(())
    }

    /// Checks a new password.
    pub fn password(&self, password: &str) -> Result<(), ProtoError> {
        let c = &self.cfg;
        if password.is_empty() {
            return Err(invalid(ErrorCode::InvalidPassword, "You need to fill in a password."));
        }
        let n = password.chars().count();
        if n < c.password_min || n > c.password_max {
            return Err(invalid(
                ErrorCode::InvalidPassword,
                format!(
                    "Password must be between {} and {} characters long.",
                    c.password_min, c.password_max
                ),
            ));
        }
        let has = |f: fn(char) -> bool| password.chars().any(f);
        let ok = self.password.is_match(password)
            && (!c.password_require_letter || has(|ch| ch.is_alphabetic()))
            && (!c.password_require_digit || has(|ch| ch.is_ascii_digit()))
            && (!c.password_require_special || has(|ch| SPECIALS.contains(ch)));
        if !ok {
            return Err(invalid(
                ErrorCode::InvalidPassword,
                "Password must contain letters and at least one special character and one number.",
            ));
        }
        Ok(())
    }

    /// Checks the email given at registration; returns what to store.
    pub fn email(&self, email: Option<&str>) -> Result<Option<String>, ProtoError> {
        match email.map(str::trim).filter(|e| !e.is_empty()) {
            None if self.cfg.require_email => Err(invalid(ErrorCode::InvalidEmail, "Email address needed.")),
            None => Ok(None),
            Some(e) if is_email(e) => Ok(Some(e.to_owned())),
            Some(_) => Err(invalid(ErrorCode::InvalidEmail, "Email address is invalid.")),
        }
    }
}

/// A pragmatic email check: `local@domain.tld`, no spaces, sane lengths, DNS-style labels.
fn is_email(e: &str) -> bool {
    let Some((local, domain)) = e.rsplit_once('@') else { return false };
    if local.is_empty() || local.len() > 64 || e.len() > 254 || local.contains('@') {
        return false;
    }
    let local_ok = local.chars().all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c))
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..");
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && labels.last().is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()));
    local_ok && domain_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules::new(&AccountsConfig::default()).unwrap()
    }

    #[test]
    fn sockey_messages_are_delivered() {
        let r = rules();
        let msg = |e: Result<(), ProtoError>| e.unwrap_err().message;
        assert_eq!(msg(r.username("")), "You need to fill in a name.");
        assert_eq!(msg(r.username("ab")), "User name must be between 3 and 32 Characters..");
        assert_eq!(msg(r.username(&"a".repeat(33))), "User name must be between 3 and 32 Characters..");
        assert_eq!(msg(r.username("a b")), "Usernames may contain letters, special characters and numbers.");
        assert!(r.username("al!ce99").is_ok());
        assert_eq!(msg(r.password("")), "You need to fill in a password.");
        assert_eq!(msg(r.password("a1!")), "Password must be between 6 and 60 characters long.");
        let content = "Password must contain letters and at least one special character and one number.";
        assert_eq!(msg(r.password("abcdef1")), content);
        assert_eq!(msg(r.password("123456!")), content, "letters are required, as the message says");
        assert_eq!(msg(r.password("abc 12!")), content);
        assert!(r.password("abc12!").is_ok());
        assert_eq!(r.email(None).unwrap_err().message, "Email address needed.");
        assert_eq!(r.email(Some("nope")).unwrap_err().message, "Email address is invalid.");
        assert_eq!(r.email(Some(" a@b.io ")).unwrap(), Some("a@b.io".to_owned()));
    }

    #[test]
    fn email_shapes() {
        for ok in ["a@b.co", "first.last+tag@sub.example.org", "x_y@a-b.io"] {
            assert!(is_email(ok), "{ok}");
        }
        for bad in
            ["", "@b.co", "a@", "a@b", "a@@b.co", "a b@c.io", "a@b..co", ".a@b.co", "a@-b.co", "a@b.c0"]
        {
            assert!(!is_email(bad), "{bad}");
        }
    }

    #[test]
    fn email_optional_when_configured() {
        let r = Rules::new(&AccountsConfig { require_email: false, ..AccountsConfig::default() }).unwrap();
        assert_eq!(r.email(None).unwrap(), None);
        assert_eq!(r.email(Some("")).unwrap(), None);
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            /// Any name of allowed characters within the length bounds is accepted.
            #[test]
            fn names_in_the_grammar_are_accepted(name in "[a-zA-Z0-9!@#$%^&*]{3,32}") {
                prop_assert!(rules().username(&name).is_ok());
            }

            /// A name with any character outside the grammar is refused with the pattern
            /// message, whatever else it contains.
            #[test]
            fn names_outside_the_grammar_are_refused(
                pre in "[a-zA-Z0-9!@#$%^&*]{1,15}",
                bad in "[^a-zA-Z0-9!@#$%^&*]",
                post in "[a-zA-Z0-9!@#$%^&*]{1,15}",
            ) {
                let name = format!("{pre}{bad}{post}");
                let e = rules().username(&name).unwrap_err();
                prop_assert_eq!(e.code, ErrorCode::InvalidUsername);
            }

            /// The password rule is exactly: allowed characters, 6-60 long, at least one
            /// letter, digit and special character.
            #[test]
            fn password_rule_matches_its_definition(pw in "[a-zA-Z0-9!@#$%^&* ~]{0,64}") {
                let n = pw.chars().count();
                let expected = (6..=60).contains(&n)
                    && pw.chars().all(|c| c.is_ascii_alphanumeric() || SPECIALS.contains(c))
                    && pw.chars().any(|c| c.is_ascii_alphabetic())
                    && pw.chars().any(|c| c.is_ascii_digit())
                    && pw.chars().any(|c| SPECIALS.contains(c));
                prop_assert_eq!(rules().password(&pw).is_ok(), expected, "{:?}", pw);
            }

            /// The email check never panics and only accepts one `@` with a dotted domain.
            #[test]
            fn email_check_is_total(e in "\\PC{0,80}") {
                if is_email(&e) {
                    prop_assert_eq!(e.matches('@').count(), 1);
                    prop_assert!(e.rsplit_once('@').is_some_and(|(_, d)| d.contains('.')));
                }
            }
        }
    }
}
