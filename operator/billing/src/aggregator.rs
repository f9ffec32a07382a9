//! One aggregation pass: pull every meter, then refresh prices and `Tenant.status.usage`
//! for the current period.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use hearth_crds::tenant::TenantUsage;
use hearth_crds::{Tenant, Tier};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::ListParams;
use kube::{Api, Client};
use tracing::warn;

use super::discovery::{Meter, metered_pods};
use super::pricing::{Prices, months_before, period_of};
use super::pull::Puller;
use super::sanity::KnownTenants;
use super::store::{UsageStore, blocking};
use super::usage_status::{evaluate, prices_of, write_usage};
use hearth_tenancy::meter_tokens::MeterRootKey;
use hearth_tenancy::object_id;

/// Meters pulled at once: one slow meter does not hold up the others.
const CONCURRENT_PULLS: usize = 8;

/// Usage and `BudgetExceeded` condition per tenant (`namespace/name`), as one pass computed them.
pub type TenantStatuses = BTreeMap<String, (TenantUsage, Condition)>;

/// Where the aggregator finds meters.
#[derive(Clone)]
pub enum MeterSource {
    /// Metered pods that InferenceModels own, in a cluster; with the usage root key, each
    /// pull carries billing's token for that model.
    Cluster {
        /// The cluster.
        client: Client,
        /// Root of billing's meter tokens.
        usage_key: Option<MeterRootKey>,
    },
    /// A fixed list (local mode).
    Static(Vec<Meter>),
}

/// The aggregator's moving parts.
#[derive(Clone)]
pub struct Aggregator {
    /// Store of record.
    pub store: Arc<dyn UsageStore>,
    /// Where meters are.
    pub meters: MeterSource,
    /// Client for Tenant status writes (absent in local mode).
    pub client: Option<Client>,
    /// Prices per tenant, shared with the invoice endpoint.
    pub prices: Arc<RwLock<BTreeMap<String, Prices>>>,
    /// Months of raw records kept, the current one included; `None` keeps them all.
    pub raw_retention_months: Option<u32>,
    puller: Puller,
    /// The last pass's cluster meters by id: they stay trusted while their pods exist.
    verified: Arc<std::sync::Mutex<HashMap<String, Meter>>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Aggregator {
    /// An aggregator over `store`.
    pub fn new(store: Arc<dyn UsageStore>, meters: MeterSource, client: Option<Client>) -> Self {
        Self {
            puller: Puller::new(store.clone()),
            store,
            meters,
            client,
            prices: Arc::default(),
            raw_retention_months: None,
            verified: Arc::default(),
        }
    }

    /// The same aggregator, compacting raw records older than `months` (the current month
    /// included) into their totals.
    pub fn keeping_raw_months(self, months: u32) -> Self {
        Self {
            raw_retention_months: Some(months),
            ..self
        }
    }

    /// Deletes the raw records of months before the retention window (their totals stay).
    pub async fn compact(&self) {
        let Some(months) = self.raw_retention_months else {
            return;
        };
        let Ok(oldest_kept) = months_before(&period_of(now_ms()), months.saturating_sub(1)) else {
            return;
        };
        let before = oldest_kept.clone();
        match blocking(&self.store, move |store| store.compact_before(&before)).await {
            Ok(0) => {}
            Ok(removed) => {
                tracing::info!(removed, %oldest_kept, "compacted raw usage records of older months into their totals")
            }
            Err(error) => warn!(%error, "compacting the billing store failed; retrying next pass"),
        }
    }

    /// Pulls every meter once, several at a time, billing records only to `tenants`; a
    /// failing meter is logged and retried next pass.
    pub async fn pull_all(&self, tenants: &KnownTenants) -> kube::Result<()> {
        let meters = match &self.meters {
            MeterSource::Cluster { client, usage_key } => {
                let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let meters = metered_pods(client, usage_key.as_ref(), &verified).await?;
                let by_id = meters.iter().map(|m| (m.id.clone(), m.clone())).collect();
                *self.verified.lock().unwrap_or_else(|p| p.into_inner()) = by_id;
                meters
            }
            MeterSource::Static(meters) => meters.clone(),
        };
        futures::stream::iter(meters)
            .for_each_concurrent(CONCURRENT_PULLS, |meter| async move {
                if let Err(error) = self.puller.pull(&meter, tenants, true).await {
                    warn!(meter = %meter.id, %error, "pulling a meter failed; retrying next pass");
                }
            })
            .await;
        Ok(())
    }

    /// Refreshes prices from `tenants`/`tiers`, evaluates each tenant's usage and budget
    /// condition, writes them to `Tenant.status` when there is a client, and returns them by
    /// `namespace/name` (local mode hands them to its gateway instead).
    pub async fn publish(&self, tenants: &[Tenant], tiers: &[Tier]) -> kube::Result<TenantStatuses> {
        let period = period_of(now_ms());
        let mut prices = BTreeMap::new();
        let mut statuses = TenantStatuses::new();
        for tenant in tenants {
            let key = object_id(&tenant.metadata);
            let tier = tiers
                .iter()
                .find(|t| t.metadata.name.as_deref() == Some(tenant.spec.tier_ref.as_str()));
            let Ok(tenant_prices) = prices_of(tier) else {
                warn!(tier = %tenant.spec.tier_ref, "tier pricing is not decimal; skipping its tenants");
                continue;
            };
            prices.insert(key.clone(), tenant_prices);
            let (tenant_key, period_key) = (key.clone(), period.clone());
            let totals =
                match blocking(&self.store, move |store| store.totals(&tenant_key, &period_key)).await {
                    Ok(totals) => totals,
                    Err(error) => {
                        warn!(%error, "reading billing totals failed");
                        continue;
                    }
                };
            let Ok((_, usage, condition)) = evaluate(tenant, tier, &period, &totals, hearth_kube::now())
            else {
                continue;
            };
            if let Some(client) = &self.client
                && let Err(error) = write_usage(client, tenant, usage.clone(), condition.clone()).await
            {
                warn!(%error, "writing tenant usage failed; retrying next pass");
            }
            statuses.insert(key, (usage, condition));
        }
        if let Ok(mut shared) = self.prices.write() {
            *shared = prices;
        }
        Ok(statuses)
    }

    /// Runs passes every `interval` in a cluster until the task is dropped.
    pub async fn run_in_cluster(self, client: Client, interval: Duration) {
        loop {
            if let Err(error) = self.pass(&client).await {
                warn!(%error, "billing pass failed");
            }
            tokio::time::sleep(interval).await;
        }
    }

    async fn pass(&self, client: &Client) -> kube::Result<()> {
        let tenants = Api::<Tenant>::all(client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        self.pull_all(&KnownTenants::listed_now(&tenants)).await?;
        self.compact().await;
        let tiers = Api::<Tier>::all(client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        self.publish(&tenants, &tiers).await.map(drop)
    }
}
