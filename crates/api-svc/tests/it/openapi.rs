//! `/openapi.json`.

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::spawn_app;

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let doc: Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/files", "post"),
        ("/v1/files", "get"),
        ("/v1/files/{id}", "get"),
        ("/v1/files/{id}", "delete"),
        ("/v1/files/{id}/content", "get"),
        ("/v1/files/{id}/content", "head"),
        ("/v1/files/{id}/artifacts/{name}", "get"),
        ("/v1/files/{id}/artifacts/{name}", "head"),
        ("/livez", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} missing");
    }
    let upload = &paths["/v1/files"]["post"];
    let form = &upload["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"];
    assert_eq!(form, "#/components/schemas/UploadForm");
    assert_eq!(doc["components"]["schemas"]["UploadForm"]["properties"]["file"]["format"], "binary");
    assert!(upload["requestBody"]["content"].get("application/octet-stream").is_some());
    assert!(upload["responses"].get("202").is_some());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["schemas"]["FileView"].is_object());
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());

    // The list's query as the handler reads it: an empty value is no value.
    let params = paths["/v1/files"]["get"]["parameters"].as_array().unwrap();
    let param = |name: &str| params.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("{name}"));
    assert_eq!(param("status")["schema"]["$ref"], "#/components/schemas/Status");
    assert_eq!(param("limit")["schema"]["maximum"], 200);
    assert_eq!(param("limit")["schema"]["minimum"], 1);
    assert_eq!(param("cursor")["schema"]["pattern"], "^[A-Za-z0-9_-]{32}$");
    assert!(params.iter().all(|p| p["allowEmptyValue"] == true), "{params:?}");
    // Content is served as the uploader typed it.
    assert!(paths["/v1/files/{id}/content"]["get"]["responses"]["200"]["content"].get("*/*").is_some());
}
