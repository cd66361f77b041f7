//! A tenant is usable through the kubeconfig Nestor emitted, and only through it:
//! `/readyz`, a namespace and a ConfigMap created and read back, with a highly
//! available control plane (3 etcd members, 2 apiservers). The single-member case is
//! exercised by `healing.rs`, `cli.rs` and `in_cluster.rs`.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, PostParams};
use serde_json::json;
use support::{MAX_WAIT, Operator, in_namespace, poll_for, runnable_spec, wait_for};

const TENANT: &str = "ha";

#[tokio::test]
async fn an_ha_tenant_is_used_through_its_emitted_kubeconfig() {
    in_namespace("usage", async |ns| {
        let _operator = Operator::start(&ns.name, "usage").await;
        let mut spec = runnable_spec();
        spec["etcd"] = json!({"replicas": 3, "storage": {"ephemeral": true}});
        spec["apiServer"] = json!({"replicas": 2});
        ns.create_tenant(TENANT, spec).await;

        // The emitted kubeconfig answers /readyz once the tenant says Ready. Three etcd
        // members and two apiservers on two cores may need longer than one harness wait,
        // so first up to 240 s for Ready, then the harness's bounded wait for /readyz.
        let ready = poll_for(Duration::from_secs(240), Duration::from_secs(2), async || {
            let tenant = ns.tenant(TENANT).await?;
            let conditions = tenant.status.map(|status| status.conditions).unwrap_or_default();
            if conditions.iter().any(|condition| condition.type_ == "Ready" && condition.status == "True") {
                Ok(())
            } else {
                Err(format!("not Ready: {conditions:?}"))
            }
        })
        .await;
        // Not failed here: the wait below gives it one more bounded wait, and fails with
        // the state it sees then.
        if let Err(state) = ready {
            eprintln!("HA tenant not Ready within 240 s, waiting once more; last observed: {state}");
        }
        let client = wait_for("HA tenant Ready and answering /readyz", MAX_WAIT, async || {
            let tenant = ns.tenant(TENANT).await?;
            let ready = tenant.status.as_ref().is_some_and(|status| {
                status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
            });
            if !ready {
                return Err(format!("not Ready: {:?}", tenant.status.map(|status| status.conditions)));
            }
            let client = ns.tenant_client(TENANT).await?;
            let request =
                hyper::Request::get("/readyz").body(Vec::new()).map_err(|error| error.to_string())?;
            match client.request_text(request).await {
                Ok(text) if text == "ok" => Ok(client),
                Ok(text) => Err(format!("/readyz answered {text:?}")),
                Err(error) => Err(format!("/readyz: {error}")),
            }
        })
        .await;

        let names = ns.names(TENANT);
        let deployment = ns
            .api::<k8s_openapi::api::apps::v1::Deployment>()
            .get(&names.apiserver())
            .await
            .expect("apiserver Deployment");
        assert_eq!(
            deployment.status.and_then(|status| status.ready_replicas),
            Some(2),
            "two apiservers serve"
        );

        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace: Namespace =
            serde_json::from_value(json!({"metadata": {"name": "team-work"}})).expect("Namespace");
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .expect("create a namespace in the tenant");
        let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "team-work");
        let config_map: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": "settings"}, "data": {"colour": "green"}}))
                .expect("ConfigMap");
        config_maps
            .create(&PostParams::default(), &config_map)
            .await
            .expect("create a ConfigMap in the tenant");

        // Read back through a second, fresh client: the data is in the tenant's etcd.
        let fresh = ns.tenant_client(TENANT).await.expect("tenant client");
        let read: ConfigMap = Api::namespaced(fresh.clone(), "team-work")
            .get("settings")
            .await
            .expect("read the ConfigMap back");
        assert_eq!(read.data.and_then(|data| data.get("colour").cloned()).as_deref(), Some("green"));
        let listed = Api::<Namespace>::all(fresh).list(&Default::default()).await.expect("list namespaces");
        let listed: Vec<String> =
            listed.items.into_iter().filter_map(|namespace| namespace.metadata.name).collect();
        assert!(listed.iter().any(|name| name == "team-work"), "{listed:?}");
        assert!(listed.iter().any(|name| name == "kube-system"), "{listed:?}");
    })
    .await;
}
