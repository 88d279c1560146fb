//! Phone numbers as the PBX, the directory and the address book write them, brought to one
//! form (E.164) so that they can be compared.
//!
//! The parsing and the numbering plans are the `phonenumber` library's; this module only
//! decides what Ampel accepts: a number that parses for the company's country, `tel:` and
//! `sip:` URIs whose user part is a number, and nothing that merely looks like one.

use phonenumber::Mode;
use phonenumber::country::Id;

/// Why a text is not a phone number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    /// The text is empty or longer than any number.
    #[error("`{0}` is not a phone number")]
    Malformed(String),
    /// The text parses but no numbering plan has such a number.
    #[error("`{0}` is not a valid phone number")]
    Invalid(String),
}

/// The company's country for numbers dialled without a country code.
pub fn country(code: &str) -> Option<Id> {
    code.parse().ok()
}

/// The number in E.164 (`+4930123456`), read with `country` for national numbers.
pub fn normalise(text: &str, country: Option<Id>) -> Result<String, NumberError> {
    let trimmed = text.trim();
    let bare = strip_uri(trimmed);
    let malformed = || NumberError::Malformed(trimmed.chars().take(64).collect());
    if bare.is_empty()
        || bare.len() > 40
        || !bare.chars().all(|c| c.is_ascii_digit() || " +-()./".contains(c))
        || !bare.chars().any(|c| c.is_ascii_digit())
    {
        return Err(malformed());
    }
    // An international prefix written as 00 is what people type on German phones.
    let bare = match bare.strip_prefix("00") {
        Some(rest) => format!("+{rest}"),
        None => bare.to_owned(),
    };
    let number = phonenumber::parse(country, &bare).map_err(|_| malformed())?;
    if !phonenumber::is_valid(&number) {
        return Err(NumberError::Invalid(trimmed.chars().take(64).collect()));
    }
    Ok(number.format().mode(Mode::E164).to_string())
}

/// The user part of a `tel:` or `sip:` URI, or the text itself.
fn strip_uri(text: &str) -> &str {
    let lower = text.get(..4).map(str::to_ascii_lowercase);
    let rest = match lower.as_deref() {
        Some("tel:") | Some("sip:") => &text[4..],
        _ => text,
    };
    let rest = rest.split(';').next().unwrap_or(rest);
    rest.split('@').next().unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn national_international_and_uri_forms_meet_in_e164() {
        let de = country("DE");
        for text in [
            "030 1234567",
            "+49 30 1234567",
            "0049301234567",
            "tel:+49-30-1234567",
            "sip:+49301234567@pbx.example.com;user=phone",
            "(030) 123 45 67",
        ] {
            assert_eq!(normalise(text, de).unwrap(), "+49301234567", "{text}");
        }
        assert_eq!(normalise("0170 1234567", de).unwrap(), "+491701234567");
        assert_eq!(normalise("+1 650 253 0000", de).unwrap(), "+16502530000");
        assert_eq!(normalise("020 7946 0958", country("GB")).unwrap(), "+442079460958");
    }

    #[test]
    fn what_is_not_a_number_is_refused() {
        let de = country("DE");
        for text in
            ["", "   ", "alice", "+49 1", "12ab34", "+", "0", "'; drop table", &"9".repeat(60)]
        {
            assert!(normalise(text, de).is_err(), "{text:?}");
        }
        assert!(normalise("+49 1", de).is_err());
    }
}
