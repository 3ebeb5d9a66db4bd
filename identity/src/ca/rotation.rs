//! CA rotation with an overlapping bundle.
//!
//! A trust domain has one or more CA generations. A new generation is
//! *prepared*: it joins the bundle, so every workload and peer learns its
//! certificate before anything it signs appears. After a propagation delay
//! it becomes *active* and signs every new SVID; the previous one is
//! *retired*: it signs nothing more but stays in the bundle until the last
//! SVID it signed has expired, then it is dropped.
//!
//! Everything here is pure: decisions take `now`; key generation is the only
//! side effect (randomness).

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::authority::{Authority, AuthorityError};
use super::key::{EcKey, KeyError, KeyUse};
use crate::jwt::JwtBundle;
use crate::x509::{X509Bundle, X509Svid};
use crate::{SpiffeId, TrustDomain};

/// Where a generation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// In the bundle, not signing yet.
    Prepared,
    /// Signs new SVIDs.
    Active,
    /// Signs nothing; in the bundle until its last SVID expires.
    Retired,
}

impl Stage {
    /// The stage's name, as the CLI shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prepared => "prepared",
            Self::Active => "active",
            Self::Retired => "retired",
        }
    }
}

/// When rotations happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    /// Lifetime of a self-signed CA certificate.
    pub ca_ttl: Duration,
    /// The longest SVID lifetime in use (X.509 or JWT): a retired
    /// generation stays in the bundle at least this long after it last
    /// signed.
    pub max_svid_ttl: Duration,
    /// How long a prepared generation is in the bundle before it signs.
    pub propagation: Duration,
}

impl RotationPolicy {
    /// Prepare the next generation once the active one has used this share
    /// of its lifetime (automatic rotation).
    const PREPARE_AT: (u32, u32) = (1, 2);
    /// Activate an automatically prepared generation at this share.
    const ACTIVATE_AT: (u32, u32) = (2, 3);
}

/// A generation's lifecycle record (what is persisted besides its keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    /// The generation's number, increasing by one per rotation.
    pub number: u64,
    /// Its stage.
    pub stage: Stage,
    /// When it was prepared.
    pub prepared_at: SystemTime,
    /// When a prepared generation becomes active.
    pub activate_after: SystemTime,
    /// When it became active.
    pub activated_at: Option<SystemTime>,
    /// When it was retired.
    pub retired_at: Option<SystemTime>,
    /// No SVID it signed expires after this (a high-water mark, persisted
    /// ahead of issuance so that a restart never underestimates it).
    pub signed_until: SystemTime,
}

/// One CA generation: the X.509 authority, the JWT signing key and their
/// lifecycle.
#[derive(Debug)]
pub struct Generation {
    /// The X.509 CA.
    pub authority: Authority,
    /// The JWT-SVID signing key.
    pub jwt_key: EcKey,
    /// Its lifecycle.
    pub lifecycle: Lifecycle,
}

impl Generation {
    /// The key id JWT-SVIDs of this generation carry (`kid`).
    pub fn jwt_key_id(&self) -> String {
        jwt_key_id(self.lifecycle.number, self.jwt_key.public_point())
    }
}

/// The JWT key id of a generation: its number and a digest of the key.
pub fn jwt_key_id(number: u64, public_point: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, public_point);
    format!("{number}-{}", super::authority::hex(&digest.as_ref()[..8]))
}

/// What a call to [`CaSet::tick`] or a rotation request changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationEvent {
    /// A generation joined the bundle.
    Prepared {
        /// Its number.
        number: u64,
    },
    /// A generation started signing; the previous one retired.
    Activated {
        /// Its number.
        number: u64,
        /// The one it replaced.
        retired: Option<u64>,
    },
    /// A retired generation left the bundle.
    Dropped {
        /// Its number.
        number: u64,
    },
}

/// Why rotation or issuance failed.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// A new generation could not be made.
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    /// A JWT key could not be made.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// There is no active generation.
    #[error("trust domain {trust_domain} has no active CA")]
    NoActive {
        /// The trust domain.
        trust_domain: TrustDomain,
    },
    /// An operator-supplied CA cannot be rotated automatically.
    #[error(
        "the CA of {trust_domain} is operator-supplied: rotate it by supplying the next CA \
         (palisade identity ca rotate --cert FILE --key FILE [--bundle FILE])"
    )]
    Upstream {
        /// The trust domain.
        trust_domain: TrustDomain,
    },
    /// An operator-supplied CA expires before an SVID it signs now would.
    #[error(
        "the supplied CA certificate expires at {}, sooner than the longest SVID lifetime \
         ({} s) from now ({}): supply a CA certificate valid for longer",
        crate::timestamp::rfc3339(*not_after),
        max_svid_ttl.as_secs(),
        crate::timestamp::rfc3339(*now)
    )]
    SuppliedExpiresSoon {
        /// The CA certificate's notAfter.
        not_after: SystemTime,
        /// When it was supplied.
        now: SystemTime,
        /// The policy's longest SVID lifetime.
        max_svid_ttl: Duration,
    },
}

/// All CA generations of one trust domain.
#[derive(Debug)]
pub struct CaSet {
    trust_domain: TrustDomain,
    generations: Vec<Generation>,
}

impl CaSet {
    /// A set with a first, active, self-signed generation.
    pub fn bootstrap(
        trust_domain: TrustDomain,
        now: SystemTime,
        policy: &RotationPolicy,
    ) -> Result<Self, RotationError> {
        let mut set = Self {
            trust_domain,
            generations: Vec::new(),
        };
        set.prepare_self_signed(now, now, policy)?;
        set.activate_due(now, policy);
        Ok(set)
    }

    /// A set from stored generations (any order).
    pub fn from_generations(trust_domain: TrustDomain, mut generations: Vec<Generation>) -> Self {
        generations.sort_by_key(|g| g.lifecycle.number);
        Self {
            trust_domain,
            generations,
        }
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// Every generation still in the bundle, oldest first.
    pub fn generations(&self) -> &[Generation] {
        &self.generations
    }

    /// The active generation.
    pub fn active(&self) -> Result<&Generation, RotationError> {
        self.generations
            .iter()
            .rev()
            .find(|g| g.lifecycle.stage == Stage::Active)
            .ok_or_else(|| RotationError::NoActive {
                trust_domain: self.trust_domain.clone(),
            })
    }

    fn active_mut(&mut self) -> Result<&mut Generation, RotationError> {
        let trust_domain = &self.trust_domain;
        self.generations
            .iter_mut()
            .rev()
            .find(|g| g.lifecycle.stage == Stage::Active)
            .ok_or_else(|| RotationError::NoActive {
                trust_domain: trust_domain.clone(),
            })
    }

    /// The trust anchors of every generation in the bundle (DER, no
    /// duplicates: generations under one operator root share it).
    pub fn x509_anchors(&self) -> Vec<&[u8]> {
        let mut anchors: Vec<&[u8]> = Vec::new();
        for anchor in self.generations.iter().flat_map(|g| g.authority.anchors()) {
            if !anchors.contains(&anchor.as_slice()) {
                anchors.push(anchor);
            }
        }
        anchors
    }

    /// The X.509 bundle of the trust domain: the anchors of every
    /// generation ([`CaSet::x509_anchors`]). An anchor that cannot go into
    /// a bundle (another anchor has its key id) is left out with a warning.
    pub fn x509_bundle(&self) -> X509Bundle {
        let mut bundle = X509Bundle::new(self.trust_domain.clone());
        for anchor in self.x509_anchors() {
            if let Err(e) = bundle.add_authority(anchor) {
                warn!(
                    trust_domain = %self.trust_domain,
                    error = %e,
                    "a CA certificate is left out of the X.509 bundle"
                );
            }
        }
        bundle
    }

    /// The JWT bundle of the trust domain: the JWT key of every generation,
    /// by [`Generation::jwt_key_id`].
    pub fn jwt_bundle(&self) -> JwtBundle {
        let mut bundle = JwtBundle::new(self.trust_domain.clone());
        for g in &self.generations {
            bundle.insert_p256(g.jwt_key_id(), g.jwt_key.public_point());
        }
        bundle
    }

    /// Issues an X.509-SVID from the active generation. Returns the SVID and
    /// whether the lifecycle records must be persisted (the high-water mark
    /// moved).
    pub fn issue_x509(
        &mut self,
        id: &SpiffeId,
        now: SystemTime,
        ttl: Duration,
    ) -> Result<(X509Svid, bool), RotationError> {
        let active = self.active_mut()?;
        let svid = active.authority.issue(id, now, ttl)?;
        let moved = active.note_signed(svid.not_after(), ttl);
        Ok((svid, moved))
    }

    /// Signs an X.509-SVID for a holder's public key (DER SPKI).
    pub fn issue_x509_for_key(
        &mut self,
        id: &SpiffeId,
        spki_der: &[u8],
        now: SystemTime,
        ttl: Duration,
    ) -> Result<(Vec<Vec<u8>>, SystemTime, bool), RotationError> {
        let active = self.active_mut()?;
        let (chain, not_after) = active.authority.issue_for_key(id, spki_der, now, ttl)?;
        let moved = active.note_signed(not_after, ttl);
        Ok((chain, not_after, moved))
    }

    /// Records that the active generation signed a JWT expiring at
    /// `expiry`; returns whether the lifecycle must be persisted.
    pub fn note_jwt_signed(
        &mut self,
        expiry: SystemTime,
        ttl: Duration,
    ) -> Result<bool, RotationError> {
        Ok(self.active_mut()?.note_signed(expiry, ttl))
    }

    /// Starts a rotation now (an operator's request): prepares a
    /// self-signed generation that activates after the propagation delay,
    /// or, with `immediately`, at once. A generation already prepared is
    /// reused.
    pub fn rotate(
        &mut self,
        now: SystemTime,
        immediately: bool,
        policy: &RotationPolicy,
    ) -> Result<Vec<RotationEvent>, RotationError> {
        let mut events = Vec::new();
        let activate_after = if immediately {
            now
        } else {
            now + policy.propagation
        };
        match self.prepared_mut() {
            Some(prepared) => {
                prepared.lifecycle.activate_after =
                    prepared.lifecycle.activate_after.min(activate_after);
            }
            None => {
                if !self.active()?.authority.is_self_signed() {
                    return Err(RotationError::Upstream {
                        trust_domain: self.trust_domain.clone(),
                    });
                }
                let number = self.prepare_self_signed(now, activate_after, policy)?;
                events.push(RotationEvent::Prepared { number });
            }
        }
        events.extend(self.activate_due(now, policy));
        Ok(events)
    }

    /// Adds an operator-supplied generation as prepared; it activates after
    /// the propagation delay (or at once with `immediately`). A CA that
    /// expires within the longest SVID lifetime from `now` is refused.
    pub fn prepare_supplied(
        &mut self,
        authority: Authority,
        now: SystemTime,
        immediately: bool,
        policy: &RotationPolicy,
    ) -> Result<Vec<RotationEvent>, RotationError> {
        if authority.not_after() <= now + policy.max_svid_ttl {
            return Err(RotationError::SuppliedExpiresSoon {
                not_after: authority.not_after(),
                now,
                max_svid_ttl: policy.max_svid_ttl,
            });
        }
        let number = self.next_number();
        let activate_after = if immediately {
            now
        } else {
            now + policy.propagation
        };
        self.generations
            .retain(|g| g.lifecycle.stage != Stage::Prepared);
        self.generations.push(Generation {
            authority,
            jwt_key: EcKey::generate(KeyUse::Jwt)?,
            lifecycle: Lifecycle::prepared(number, now, activate_after),
        });
        let mut events = vec![RotationEvent::Prepared { number }];
        events.extend(self.activate_due(now, policy));
        Ok(events)
    }

    /// Advances time: prepares the next self-signed generation when the
    /// active one is half-way through its life, activates prepared ones
    /// that are due, and drops retired ones whose SVIDs have all expired.
    pub fn tick(
        &mut self,
        now: SystemTime,
        policy: &RotationPolicy,
    ) -> Result<Vec<RotationEvent>, RotationError> {
        let mut events = Vec::new();
        if self.prepared_mut().is_none() {
            let active = self.active()?;
            let auth = &active.authority;
            if auth.is_self_signed()
                && now
                    >= share(
                        auth.not_before(),
                        auth.not_after(),
                        RotationPolicy::PREPARE_AT,
                    )
            {
                let activate_after = share(
                    auth.not_before(),
                    auth.not_after(),
                    RotationPolicy::ACTIVATE_AT,
                )
                .max(now + policy.propagation);
                let number = self.prepare_self_signed(now, activate_after, policy)?;
                events.push(RotationEvent::Prepared { number });
            }
        }
        events.extend(self.activate_due(now, policy));
        let before: Vec<u64> = self
            .generations
            .iter()
            .map(|g| g.lifecycle.number)
            .collect();
        self.generations.retain(|g| {
            g.lifecycle.stage != Stage::Retired
                || (now < g.lifecycle.signed_until && now < g.authority.not_after())
        });
        for number in before {
            if !self
                .generations
                .iter()
                .any(|g| g.lifecycle.number == number)
            {
                events.push(RotationEvent::Dropped { number });
            }
        }
        Ok(events)
    }

    /// When [`CaSet::tick`] next has something to do (at the latest).
    ///
    /// The active generation's half-life counts only when `tick` would
    /// prepare a successor then: while a generation is already prepared, or
    /// for an operator-supplied CA, nothing happens at that point (counting
    /// it would leave the answer in the past and the caller ticking in a
    /// loop).
    pub fn next_tick(&self) -> Option<SystemTime> {
        let mut next: Option<SystemTime> = None;
        let mut consider = |t: SystemTime| next = Some(next.map_or(t, |n| n.min(t)));
        let has_prepared = self
            .generations
            .iter()
            .any(|g| g.lifecycle.stage == Stage::Prepared);
        for g in &self.generations {
            match g.lifecycle.stage {
                Stage::Prepared => consider(g.lifecycle.activate_after),
                Stage::Retired => consider(g.lifecycle.signed_until.min(g.authority.not_after())),
                Stage::Active => {
                    let auth = &g.authority;
                    if !has_prepared && auth.is_self_signed() {
                        consider(share(
                            auth.not_before(),
                            auth.not_after(),
                            RotationPolicy::PREPARE_AT,
                        ));
                    }
                }
            }
        }
        next
    }

    fn prepared_mut(&mut self) -> Option<&mut Generation> {
        self.generations
            .iter_mut()
            .find(|g| g.lifecycle.stage == Stage::Prepared)
    }

    fn next_number(&self) -> u64 {
        self.generations
            .iter()
            .map(|g| g.lifecycle.number + 1)
            .max()
            .unwrap_or(1)
    }

    fn prepare_self_signed(
        &mut self,
        now: SystemTime,
        activate_after: SystemTime,
        policy: &RotationPolicy,
    ) -> Result<u64, RotationError> {
        let number = self.next_number();
        let authority = Authority::self_signed(&self.trust_domain, number, now, policy.ca_ttl)?;
        self.generations.push(Generation {
            authority,
            jwt_key: EcKey::generate(KeyUse::Jwt)?,
            lifecycle: Lifecycle::prepared(number, now, activate_after),
        });
        Ok(number)
    }

    fn activate_due(&mut self, now: SystemTime, policy: &RotationPolicy) -> Vec<RotationEvent> {
        let Some(index) = self.generations.iter().position(|g| {
            g.lifecycle.stage == Stage::Prepared && g.lifecycle.activate_after <= now
        }) else {
            return Vec::new();
        };
        let mut retired = None;
        for g in &mut self.generations {
            if g.lifecycle.stage == Stage::Active {
                g.lifecycle.stage = Stage::Retired;
                g.lifecycle.retired_at = Some(now);
                // Nothing it signs from now on; what it signed lives at most
                // the longest SVID lifetime.
                g.lifecycle.signed_until = g.lifecycle.signed_until.min(now + policy.max_svid_ttl);
                retired = Some(g.lifecycle.number);
            }
        }
        let g = &mut self.generations[index];
        g.lifecycle.stage = Stage::Active;
        g.lifecycle.activated_at = Some(now);
        vec![RotationEvent::Activated {
            number: g.lifecycle.number,
            retired,
        }]
    }
}

impl Generation {
    /// Moves the high-water mark past `expiry`, one TTL ahead, so that it
    /// is persisted about once per TTL rather than once per SVID.
    fn note_signed(&mut self, expiry: SystemTime, ttl: Duration) -> bool {
        if expiry <= self.lifecycle.signed_until {
            return false;
        }
        self.lifecycle.signed_until = (expiry + ttl).min(self.authority.not_after());
        true
    }
}

impl Lifecycle {
    fn prepared(number: u64, now: SystemTime, activate_after: SystemTime) -> Self {
        Self {
            number,
            stage: Stage::Prepared,
            prepared_at: now,
            activate_after,
            activated_at: None,
            retired_at: None,
            signed_until: now,
        }
    }
}

/// The instant `num/den` of the way from `start` to `end`.
fn share(start: SystemTime, end: SystemTime, (num, den): (u32, u32)) -> SystemTime {
    let span = end.duration_since(start).unwrap_or_default();
    start + span * num / den
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn policy() -> RotationPolicy {
        RotationPolicy {
            ca_ttl: 24 * HOUR,
            max_svid_ttl: HOUR,
            propagation: Duration::from_secs(30),
        }
    }

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn id() -> SpiffeId {
        "spiffe://example.org/identity/1000".parse().unwrap()
    }

    fn stages(set: &CaSet) -> Vec<(u64, Stage)> {
        set.generations()
            .iter()
            .map(|g| (g.lifecycle.number, g.lifecycle.stage))
            .collect()
    }

    #[test]
    fn manual_rotation_overlaps_then_drops_the_old_generation() {
        let p = policy();
        let mut set = CaSet::bootstrap(TrustDomain::new("example.org").unwrap(), t0(), &p).unwrap();
        assert_eq!(stages(&set), [(1, Stage::Active)]);
        let (old_svid, moved) = set.issue_x509(&id(), t0(), HOUR).unwrap();
        assert!(moved, "the first SVID moves the high-water mark");
        assert!(
            !set.issue_x509(&id(), t0(), HOUR).unwrap().1,
            "the next one does not"
        );

        let t1 = t0() + Duration::from_secs(60);
        let events = set.rotate(t1, false, &p).unwrap();
        assert_eq!(events, [RotationEvent::Prepared { number: 2 }]);
        assert_eq!(
            set.x509_anchors().len(),
            2,
            "the new CA is in the bundle first"
        );
        assert_eq!(set.x509_bundle().len(), 2);
        let kids: Vec<String> = set
            .generations()
            .iter()
            .map(Generation::jwt_key_id)
            .collect();
        assert_eq!(
            set.jwt_bundle().keys().keys().cloned().collect::<Vec<_>>(),
            kids,
            "every generation's JWT key is in the bundle"
        );
        assert_eq!(
            set.active().unwrap().lifecycle.number,
            1,
            "the old one still signs"
        );

        let events = set.tick(t1 + p.propagation, &p).unwrap();
        assert_eq!(
            events,
            [RotationEvent::Activated {
                number: 2,
                retired: Some(1)
            }]
        );
        let (new_svid, _) = set.issue_x509(&id(), t1 + p.propagation, HOUR).unwrap();
        assert_ne!(new_svid.chain(), old_svid.chain());
        assert_eq!(
            set.x509_anchors().len(),
            2,
            "the old CA stays while its SVIDs live"
        );

        let events = set.tick(old_svid.not_after() + HOUR, &p).unwrap();
        assert_eq!(events, [RotationEvent::Dropped { number: 1 }]);
        assert_eq!(stages(&set), [(2, Stage::Active)]);
    }

    #[test]
    fn automatic_rotation_follows_the_ca_lifetime() {
        let p = policy();
        let mut set = CaSet::bootstrap(TrustDomain::new("example.org").unwrap(), t0(), &p).unwrap();
        assert!(set.tick(t0() + 11 * HOUR, &p).unwrap().is_empty());
        let half = t0() + 12 * HOUR;
        assert_eq!(
            set.tick(half, &p).unwrap(),
            [RotationEvent::Prepared { number: 2 }]
        );
        assert!(
            set.tick(half + HOUR, &p).unwrap().is_empty(),
            "activates at 2/3"
        );
        set.issue_x509(&id(), t0() + 15 * HOUR, HOUR).unwrap();
        let events = set.tick(t0() + 16 * HOUR, &p).unwrap();
        assert_eq!(
            events,
            [RotationEvent::Activated {
                number: 2,
                retired: Some(1)
            }]
        );
        assert!(set.next_tick().is_some());
    }

    #[test]
    fn immediate_rotation_activates_at_once() {
        let p = policy();
        let mut set = CaSet::bootstrap(TrustDomain::new("example.org").unwrap(), t0(), &p).unwrap();
        let events = set.rotate(t0(), true, &p).unwrap();
        assert_eq!(
            events,
            [
                RotationEvent::Prepared { number: 2 },
                RotationEvent::Activated {
                    number: 2,
                    retired: Some(1)
                }
            ]
        );
        // Nothing was signed by generation 1, so it goes at the next tick.
        assert_eq!(
            set.tick(t0() + Duration::from_secs(1), &p).unwrap(),
            [RotationEvent::Dropped { number: 1 }]
        );
    }

    /// An intermediate CA valid from `not_before` to `not_after` under a
    /// fresh operator root, as `read_supplied` would load it.
    fn supplied(not_before: SystemTime, not_after: SystemTime) -> Authority {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
        let ca_params = || {
            let mut params = CertificateParams::new(Vec::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            params.not_before = not_before.into();
            params.not_after = not_after.into();
            params
        };
        let root_key = KeyPair::generate().unwrap();
        let root_params = ca_params();
        let root = root_params.self_signed(&root_key).unwrap();
        let root_issuer = rcgen::Issuer::new(root_params, &root_key);
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params().signed_by(&ca_key, &root_issuer).unwrap();
        Authority::from_parts(
            &TrustDomain::new("example.org").unwrap(),
            ca.der().to_vec(),
            Vec::new(),
            vec![root.der().to_vec()],
            &ca_key.serialize_der(),
        )
        .unwrap()
    }

    #[test]
    fn next_tick_is_ahead_when_half_life_prepares_nothing() {
        let p = policy();
        let td = TrustDomain::new("example.org").unwrap();

        // Self-signed, past half-life, with the successor already prepared.
        let mut set = CaSet::bootstrap(td.clone(), t0(), &p).unwrap();
        let half = t0() + 12 * HOUR;
        assert_eq!(
            set.tick(half, &p).unwrap(),
            [RotationEvent::Prepared { number: 2 }]
        );
        let now = half + HOUR;
        assert!(set.tick(now, &p).unwrap().is_empty());
        let next = set.next_tick().expect("the prepared generation activates");
        assert!(next > now, "next tick {next:?} is not after {now:?}");

        // An operator-supplied CA past half-life: tick never prepares.
        let mut set = CaSet::bootstrap(td, t0(), &p).unwrap();
        set.issue_x509(&id(), t0(), HOUR).unwrap();
        set.prepare_supplied(supplied(t0(), t0() + 24 * HOUR), t0(), true, &p)
            .unwrap();
        let now = t0() + 13 * HOUR;
        let early = t0() + HOUR / 2;
        let events = set.tick(early, &p).unwrap();
        assert!(events.is_empty(), "{events:?}");
        let next = set.next_tick().expect("the retired generation drops");
        assert!(next > early, "next tick {next:?} is in the past");
        assert_eq!(
            set.tick(now, &p).unwrap(),
            [RotationEvent::Dropped { number: 1 }]
        );
        assert!(
            set.next_tick().is_none_or(|next| next > now),
            "next tick {:?} is not after {now:?}",
            set.next_tick()
        );
        assert!(set.tick(now, &p).unwrap().is_empty());
    }

    #[test]
    fn a_supplied_ca_must_outlive_the_longest_svid() {
        let p = policy();
        let mut set = CaSet::bootstrap(TrustDomain::new("example.org").unwrap(), t0(), &p).unwrap();
        let short = supplied(t0(), t0() + p.max_svid_ttl);
        let err = set.prepare_supplied(short, t0(), true, &p).unwrap_err();
        assert!(
            matches!(err, RotationError::SuppliedExpiresSoon { .. }),
            "{err}"
        );
        let message = err.to_string();
        assert!(message.contains("2027-01-15T09:00:00Z"), "{message}");
        assert!(message.contains("valid for longer"), "{message}");
        assert_eq!(stages(&set), [(1, Stage::Active)], "nothing changed");
        let long = supplied(t0(), t0() + p.max_svid_ttl + HOUR);
        set.prepare_supplied(long, t0(), true, &p).unwrap();
        assert_eq!(set.active().unwrap().lifecycle.number, 2);
    }

    #[test]
    fn an_expired_ca_says_when_in_rfc3339() {
        let err = AuthorityError::Expired { not_after: t0() };
        assert_eq!(
            err.to_string(),
            "the CA certificate expired at 2027-01-15T08:00:00Z"
        );
    }

    #[test]
    fn svids_never_outlive_their_ca() {
        let p = RotationPolicy {
            ca_ttl: 2 * HOUR,
            ..policy()
        };
        let mut set = CaSet::bootstrap(TrustDomain::new("example.org").unwrap(), t0(), &p).unwrap();
        let (svid, _) = set
            .issue_x509(&id(), t0() + Duration::from_secs(90 * 60), HOUR)
            .unwrap();
        assert!(svid.not_after() <= set.active().unwrap().authority.not_after());
        assert!(matches!(
            set.issue_x509(&id(), t0() + 3 * HOUR, HOUR),
            Err(RotationError::Authority(AuthorityError::Expired { .. }))
        ));
    }
}
