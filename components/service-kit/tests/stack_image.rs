//! Docker tier: the locally built `deis/stack` image runs an app's command. Needs the real engine
//! and `./compose/images` to have run (the test command does both).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, LogsOptions, RemoveContainerOptions, WaitContainerOptions,
};
use futures::StreamExt;

#[tokio::test]
async fn a_command_runs_in_the_stack_image() {
    let docker = service_kit::docker::connect().await.expect("the Docker engine must be reachable");
    docker.inspect_image("deis/stack").await.expect("deis/stack is missing: run ./compose/images");

    let name = format!("deis-test-stack-{}", std::process::id());
    let body = ContainerCreateBody {
        image: Some("deis/stack".into()),
        cmd: Some(vec![
            "python3".into(),
            "-c".into(),
            "import ssl, sqlite3, venv, sys; print('stack ok', sys.version_info[:2], ssl.OPENSSL_VERSION.split()[0])".into(),
        ]),
        user: Some("app".into()),
        host_config: Some(HostConfig { network_mode: Some("none".into()), ..Default::default() }),
        ..Default::default()
    };
    docker
        .create_container(
            Some(CreateContainerOptions { name: Some(name.clone()), ..Default::default() }),
            body,
        )
        .await
        .unwrap();
    let result = async {
        docker.start_container(&name, None).await?;
        let mut wait = docker.wait_container(&name, None::<WaitContainerOptions>);
        let exit = wait.next().await.expect("wait ends with a status")?;
        let mut logs =
            docker.logs(&name, Some(LogsOptions { stdout: true, stderr: true, ..Default::default() }));
        let mut out = String::new();
        while let Some(chunk) = logs.next().await {
            out.push_str(&chunk?.to_string());
        }
        Ok::<_, bollard::errors::Error>((exit.status_code, out))
    }
    .await;
    docker
        .remove_container(&name, Some(RemoveContainerOptions { force: true, ..Default::default() }))
        .await
        .unwrap();
    let (code, out) = result.unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("stack ok (3, 11) OpenSSL"), "{out}");
}
