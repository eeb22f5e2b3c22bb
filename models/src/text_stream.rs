//! Turning a growing generation into text deltas for a client: a stop string must never reach the
//! client, not even its first half, so any tail that could begin one is held back until the next
//! token settles it; a trailing incomplete UTF-8 character (decoded as U+FFFD) is held back too.

/// The text deltas of one generation. Feed it the whole decoded output after every token
/// ([`TextStream::update`]); it hands out only text that no later token can retract.
#[derive(Debug, Clone, Default)]
pub struct TextStream {
    stops: Vec<String>,
    /// Bytes of the output text already handed out.
    emitted: usize,
    /// The output text as of the last update (cut at the stop string once one is found).
    text: String,
    stopped: bool,
}

impl TextStream {
    /// `stops`: strings that end the generation (empty strings are ignored).
    pub fn new(stops: Vec<String>) -> TextStream {
        TextStream { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), ..Default::default() }
    }

    /// Takes the whole output text so far; returns the new text that is safe to send and whether a
    /// stop string has been reached (the text is then cut just before it and nothing more comes).
    pub fn update(&mut self, text: &str) -> (String, bool) {
        if self.stopped {
            return (String::new(), true);
        }
        let usable = text.trim_end_matches('\u{fffd}');
        self.text = text.to_string();
        let first_stop = self.stops.iter().filter_map(|s| usable.find(s.as_str())).min();
        if let Some(at) = first_stop {
            self.stopped = true;
            self.text.truncate(at);
            let delta = usable.get(self.emitted.min(at)..at).unwrap_or("").to_string();
            self.emitted = at.max(self.emitted);
            return (delta, true);
        }
        let safe = usable.len() - self.held_tail(usable);
        let delta = usable.get(self.emitted..safe).unwrap_or("").to_string();
        self.emitted = safe.max(self.emitted);
        (delta, false)
    }

    /// The text still held back, for when the generation ends without a stop string.
    pub fn finish(&mut self) -> String {
        let rest = self.text.get(self.emitted..).unwrap_or("").to_string();
        self.emitted = self.text.len();
        rest
    }

    /// The output text (cut at the stop string, if one was reached).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The length of the longest tail of `text` that is a proper prefix of some stop string.
    fn held_tail(&self, text: &str) -> usize {
        let mut held = 0;
        for stop in &self.stops {
            for (cut, _) in stop.char_indices().skip(1) {
                if cut > held && text.ends_with(&stop[..cut]) {
                    held = cut;
                }
            }
        }
        held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` one at a time (as successive tokens would extend the text).
    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool, String) {
        let mut s = TextStream::new(stops.iter().map(|s| s.to_string()).collect());
        let mut text = String::new();
        let mut deltas = Vec::new();
        for p in pieces {
            text.push_str(p);
            let (d, stop) = s.update(&text);
            deltas.push(d);
            if stop {
                return (deltas, true, s.text().to_string());
            }
        }
        deltas.push(s.finish());
        (deltas, false, s.text().to_string())
    }

    #[test]
    fn without_stops_text_passes_straight_through() {
        let (d, stopped, text) = run(&[], &["Hel", "lo", " world"]);
        assert_eq!(d, ["Hel", "lo", " world", ""]);
        assert!(!stopped);
        assert_eq!(text, "Hello world");
    }

    #[test]
    fn a_stop_split_across_tokens_is_never_sent() {
        let (d, stopped, text) = run(&["END"], &["one E", "N", "D two"]);
        assert_eq!(d, ["one ", "", ""]);
        assert!(stopped);
        assert_eq!(text, "one ");
    }

    #[test]
    fn a_false_start_is_released_when_it_stops_matching() {
        let (d, stopped, text) = run(&["END"], &["one E", "N", "d"]);
        assert_eq!(d.concat(), "one ENd");
        assert_eq!(d[0], "one ");
        assert!(!stopped);
        assert_eq!(text, "one ENd");
    }

    #[test]
    fn the_earliest_of_several_stops_wins() {
        let (d, stopped, text) = run(&["world", "lo"], &["Hello world"]);
        assert_eq!(d.concat(), "Hel");
        assert!(stopped);
        assert_eq!(text, "Hel");
    }

    #[test]
    fn held_back_text_comes_out_at_the_end() {
        let (d, stopped, _) = run(&["\n\n"], &["a\n"]);
        assert_eq!(d, ["a", "\n"]);
        assert!(!stopped);
    }

    #[test]
    fn an_incomplete_character_waits_for_its_last_byte() {
        let mut s = TextStream::new(vec![]);
        assert_eq!(s.update("caf\u{fffd}").0, "caf");
        assert_eq!(s.update("café").0, "é");
        assert_eq!(s.finish(), "");
        assert_eq!(s.text(), "café");
    }

    #[test]
    fn multibyte_stops_hold_only_on_character_boundaries() {
        let (d, stopped, text) = run(&["ñé"], &["añ", "é b"]);
        assert_eq!(d, ["a", ""]);
        assert!(stopped);
        assert_eq!(text, "a");
    }
}
