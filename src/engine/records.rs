//! Listed records in columns: one side's users or accounts, every string of them in one
//! text buffer and the records holding offsets into it. A run keeps 100,000 records per
//! side in memory from the listing to the last write; as structs of owned strings that
//! was ~8 allocations and ~1.7 KB per account pair, here it is a handful of allocations
//! per side and about the text itself (docs/benchmarks.md, "memory").

/// An identity-domain user as listing extracts it, before it joins the side's [`Records`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DomainUser {
    /// SCIM id.
    pub id: String,
    pub user_name: String,
    pub active: bool,
    /// Raw values of each rule's `domainAttribute` (multi-valued: every email), per rule.
    pub keys: Vec<Vec<String>>,
}

/// An app account as listing extracts it, before it joins the side's [`Records`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppAccount {
    /// SCIM id in the app.
    pub id: String,
    pub user_name: String,
    /// The app's `externalId`: the identity-domain user id when provisioning created it.
    pub external_id: Option<String>,
    pub active: bool,
    /// Raw values of each rule's `appAttribute`, per rule.
    pub keys: Vec<Vec<String>>,
    /// First value of each import mapping's app attribute ("" when absent): what a
    /// CreateUser copies into the new user. Empty unless the policy creates users.
    pub attrs: Vec<String>,
}

/// A string inside [`Records`]' text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Span {
    start: u32,
    len: u32,
}

/// The text of one side passed 4 GiB: far beyond any listing, refused rather than wrapped.
#[derive(Debug, thiserror::Error)]
#[error("the listed records hold more than 4 GiB of text")]
pub struct TooLarge;

/// The users (or accounts) of one side, in listing order; record `i` is what matching
/// and the plans call user (or account) `i`.
#[derive(Clone, Debug, Default)]
pub struct Records {
    text: String,
    rules: usize,
    attrs: usize,
    ids: Vec<Span>,
    user_names: Vec<Span>,
    /// Empty span: no externalId.
    external_ids: Vec<Span>,
    active: Vec<bool>,
    /// Record i's values for rule r are `keys[key_ends[i*rules + r - 1] .. key_ends[i*rules + r]]`
    /// (from 0 for the very first).
    key_ends: Vec<u32>,
    keys: Vec<Span>,
    /// `attrs` values per record.
    attr_values: Vec<Span>,
}

impl Records {
    /// Empty records with `rules` matching values lists and `attrs` copied attributes each.
    pub fn new(rules: usize, attrs: usize) -> Self {
        Records {
            rules,
            attrs,
            ..Default::default()
        }
    }

    /// Room for `n` more records; the text and values as the records so far suggest
    /// (an eighth spare), so that they are not doubled and copied on the way.
    pub fn reserve(&mut self, n: usize) {
        if let Some(per) = self.text.len().checked_div(self.len()) {
            // An estimate from the server's word and one page: if it cannot be had, the
            // buffers simply grow as they fill.
            let text = n
                .saturating_mul(per)
                .saturating_add(n.saturating_mul(per) / 8);
            let _ = self.text.try_reserve_exact(text);
            let keys = n.saturating_mul(self.keys.len()) / self.len() + n / 8;
            let _ = self.keys.try_reserve_exact(keys);
        }
        self.ids.reserve_exact(n);
        self.user_names.reserve_exact(n);
        self.external_ids.reserve_exact(n);
        self.active.reserve_exact(n);
        self.key_ends.reserve_exact(n * self.rules);
        self.attr_values.reserve_exact(n * self.attrs);
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Appends an identity-domain user.
    pub fn push_user(&mut self, u: &DomainUser) -> Result<(), TooLarge> {
        self.push(&u.id, &u.user_name, None, u.active, &u.keys, &[])
    }

    /// Appends an app account.
    pub fn push_account(&mut self, a: &AppAccount) -> Result<(), TooLarge> {
        self.push(
            &a.id,
            &a.user_name,
            a.external_id.as_deref(),
            a.active,
            &a.keys,
            &a.attrs,
        )
    }

    fn push(
        &mut self,
        id: &str,
        user_name: &str,
        external_id: Option<&str>,
        active: bool,
        keys: &[Vec<String>],
        attrs: &[String],
    ) -> Result<(), TooLarge> {
        // Checked before anything is appended, so a refused record leaves no half.
        let adds = id.len()
            + user_name.len()
            + external_id.map_or(0, str::len)
            + keys.iter().flatten().map(String::len).sum::<usize>()
            + attrs.iter().map(String::len).sum::<usize>();
        if u32::try_from(self.text.len() + adds).is_err() {
            return Err(TooLarge);
        }
        let id = self.text_span(id);
        let user_name_span = self.text_span(user_name);
        let external_id = self.text_span(external_id.unwrap_or_default());
        self.ids.push(id);
        self.user_names.push(user_name_span);
        self.external_ids.push(external_id);
        self.active.push(active);
        let first_key = self.keys.len();
        for rule in 0..self.rules {
            for k in keys.get(rule).into_iter().flatten() {
                // A userName rule's value is the userName itself: stored once.
                let s = if k == user_name {
                    user_name_span
                } else {
                    self.text_span(k)
                };
                self.keys.push(s);
            }
            self.key_ends.push(self.keys.len() as u32);
        }
        for a in 0..self.attrs {
            let v = attrs.get(a).map_or("", String::as_str);
            // An import attribute is mostly the userName or a matching value again (the
            // e-mail): the text is kept once, 40 bytes an account at 100,000 accounts.
            let held = std::iter::once(user_name_span)
                .chain(self.keys[first_key..].iter().copied())
                .find(|&s| self.str(s) == v);
            let s = held.unwrap_or_else(|| self.text_span(v));
            self.attr_values.push(s);
        }
        Ok(())
    }

    fn text_span(&mut self, s: &str) -> Span {
        let start = self.text.len() as u32;
        self.text.push_str(s);
        Span {
            start,
            len: s.len() as u32,
        }
    }

    fn str(&self, s: Span) -> &str {
        &self.text[s.start as usize..(s.start + s.len) as usize]
    }

    /// Record `i`.
    pub fn get(&self, i: u32) -> Record<'_> {
        assert!((i as usize) < self.len(), "record {i} of {}", self.len());
        Record { r: self, i }
    }

    /// Every record, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Record<'_>> {
        (0..self.len() as u32).map(|i| Record { r: self, i })
    }

    /// Records of these users (tests and small inputs).
    pub fn of_users(rules: usize, users: &[DomainUser]) -> Self {
        let mut r = Records::new(rules, 0);
        for u in users {
            r.push_user(u).expect("small input");
        }
        r
    }

    /// Records of these accounts (tests and small inputs).
    pub fn of_accounts(rules: usize, attrs: usize, accounts: &[AppAccount]) -> Self {
        let mut r = Records::new(rules, attrs);
        for a in accounts {
            r.push_account(a).expect("small input");
        }
        r
    }
}

/// One record, borrowed.
#[derive(Clone, Copy)]
pub struct Record<'a> {
    r: &'a Records,
    i: u32,
}

impl<'a> Record<'a> {
    /// Its position in the listing.
    pub fn index(&self) -> u32 {
        self.i
    }

    /// SCIM id.
    pub fn id(&self) -> &'a str {
        self.r.str(self.r.ids[self.i as usize])
    }

    pub fn user_name(&self) -> &'a str {
        self.r.str(self.r.user_names[self.i as usize])
    }

    /// The app's `externalId`, when set and not empty.
    pub fn external_id(&self) -> Option<&'a str> {
        Some(self.r.str(self.r.external_ids[self.i as usize])).filter(|s| !s.is_empty())
    }

    pub fn active(&self) -> bool {
        self.r.active[self.i as usize]
    }

    /// The raw values of rule `rule`'s attribute (none for a rule out of range).
    pub fn keys(&self, rule: usize) -> impl Iterator<Item = &'a str> + Clone + use<'a> {
        let r = self.r;
        let range = if rule < r.rules {
            let at = self.i as usize * r.rules + rule;
            let start = if at == 0 { 0 } else { r.key_ends[at - 1] };
            start as usize..r.key_ends[at] as usize
        } else {
            0..0
        };
        r.keys[range].iter().map(move |&s| r.str(s))
    }

    /// Copied attribute `k` ("" when absent).
    pub fn attr(&self, k: usize) -> &'a str {
        if k >= self.r.attrs {
            return "";
        }
        self.r
            .str(self.r.attr_values[self.i as usize * self.r.attrs + k])
    }

    /// Every copied attribute, in the import mappings' order.
    pub fn attrs(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        let r = *self;
        (0..self.r.attrs).map(move |k| r.attr(k))
    }

    /// How reports name it: its userName, or its id when it has none.
    pub fn subject(&self) -> &'a str {
        let n = self.user_name();
        if n.is_empty() { self.id() } else { n }
    }
}

impl std::fmt::Debug for Record<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("index", &self.i)
            .field("id", &self.id())
            .field("user_name", &self.user_name())
            .finish_non_exhaustive()
    }
}

/// Many ids (a group's members) in one buffer: 100,000 of them as `String`s are ~7 MB,
/// here about their text.
#[derive(Clone, Debug, Default)]
pub struct Ids {
    text: String,
    ends: Vec<u32>,
}

impl Ids {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + Clone + '_ {
        (0..self.ends.len()).map(|i| {
            let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
            &self.text[start..self.ends[i] as usize]
        })
    }

    /// A linear scan: for the rare lookup (a create's conflict), not for every account.
    pub fn contains(&self, id: &str) -> bool {
        self.iter().any(|i| i == id)
    }
}

impl<S: AsRef<str>> FromIterator<S> for Ids {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut ids = Ids::default();
        for s in iter {
            ids.text.push_str(s.as_ref());
            // Ids come from one JSON document already in memory: never near 4 GiB.
            ids.ends
                .push(u32::try_from(ids.text.len()).expect("ids under 4 GiB"));
        }
        ids.text.shrink_to_fit();
        ids.ends.shrink_to_fit();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(id: &str, name: &str, ext: Option<&str>, keys: &[&[&str]]) -> AppAccount {
        AppAccount {
            id: id.into(),
            user_name: name.into(),
            external_id: ext.map(Into::into),
            active: id != "inactive",
            keys: keys
                .iter()
                .map(|k| k.iter().map(|s| s.to_string()).collect())
                .collect(),
            attrs: vec!["Given".into()],
        }
    }

    #[test]
    fn records_give_back_what_was_pushed() {
        let r = Records::of_accounts(
            2,
            2,
            &[
                account("a1", "alice", Some("u1"), &[&["alice"], &["a@x", "b@x"]]),
                account("inactive", "", Some(""), &[&[], &["c@x"]]),
                account("a3", "carol", None, &[&["carol"]]),
            ],
        );
        assert_eq!(r.len(), 3);
        let a = r.get(0);
        assert_eq!(
            (a.id(), a.user_name(), a.external_id()),
            ("a1", "alice", Some("u1"))
        );
        assert!(a.active());
        assert_eq!(a.keys(0).collect::<Vec<_>>(), ["alice"]);
        assert_eq!(a.keys(1).collect::<Vec<_>>(), ["a@x", "b@x"]);
        assert_eq!((a.attr(0), a.attr(1), a.attr(7)), ("Given", "", ""));
        let b = r.get(1);
        assert_eq!(b.external_id(), None, "an empty externalId is none");
        assert!(!b.active());
        assert_eq!(b.keys(0).count(), 0);
        assert_eq!(b.keys(1).collect::<Vec<_>>(), ["c@x"]);
        assert_eq!(b.subject(), "inactive", "no userName: the id names it");
        let c = r.get(2);
        assert_eq!(c.keys(1).count(), 0, "a rule with no values");
        assert_eq!(c.keys(5).count(), 0, "a rule out of range");
        assert_eq!(r.iter().map(|x| x.index()).collect::<Vec<_>>(), [0, 1, 2]);
        // The userName rule's values are the userNames: their text is stored once.
        let text: usize = ["a1aliceu1a@xb@xGiven", "inactivec@xGiven", "a3carolGiven"]
            .iter()
            .map(|s| s.len())
            .sum();
        assert_eq!(r.text.len(), text);
    }

    #[test]
    fn import_attributes_equal_to_held_text_are_stored_once() {
        let mut a = account("a1", "alice", None, &[&["alice"], &["a@x"]]);
        a.attrs = vec!["alice".into(), "Alice A".into(), "a@x".into(), "".into()];
        let r = Records::of_accounts(2, 4, &[a]);
        let got: Vec<_> = r.get(0).attrs().collect();
        assert_eq!(got, ["alice", "Alice A", "a@x", ""]);
        assert_eq!(r.text.len(), "a1aliceAlice Aa@x".len());
    }

    #[test]
    fn an_absurd_reservation_is_skipped_not_fatal() {
        let mut r = Records::of_users(
            1,
            &[DomainUser {
                id: "x".repeat(1 << 20),
                ..Default::default()
            }],
        );
        // 1 MiB of text per record times a million records: more than the machine has.
        r.reserve(1_000_000);
        r.push_user(&DomainUser {
            id: "u2".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(r.get(1).id(), "u2");
    }

    #[test]
    fn ids_keep_order_and_empties() {
        let ids: Ids = ["u1", "", "ü-3"].into_iter().collect();
        assert_eq!(ids.len(), 3);
        assert_eq!(ids.iter().collect::<Vec<_>>(), ["u1", "", "ü-3"]);
        assert!(Ids::default().is_empty());
    }

    #[test]
    fn unicode_text_keeps_its_boundaries() {
        let r = Records::of_users(
            1,
            &[DomainUser {
                id: "ü1".into(),
                user_name: "Zoë".into(),
                active: true,
                keys: vec![vec!["ΣΑΣ".into(), "ß".into()]],
            }],
        );
        let u = r.get(0);
        assert_eq!((u.id(), u.user_name()), ("ü1", "Zoë"));
        assert_eq!(u.keys(0).collect::<Vec<_>>(), ["ΣΑΣ", "ß"]);
    }
}
