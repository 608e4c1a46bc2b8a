"""The OpenAPI document the API serves describes its routes."""


def test_openapi_document_describes_the_api(client):
    response = client.get("/api/openapi.json")

    assert response.status_code == 200
    spec = response.json
    assert spec["openapi"].startswith("3.")
    assert {"/api/auth/register", "/api/auth/login", "/api/auth/logout", "/api/auth/me",
            "/api/notes", "/api/notes/{note_id}"} <= set(spec["paths"])
    assert set(spec["paths"]["/api/notes/{note_id}"]) >= {"get", "patch", "delete"}
    note = spec["components"]["schemas"]["Note"]
    assert note["properties"]["title"]["maxLength"] == 200
    error_shape = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, method, status in [("/api/auth/me", "get", "401"), ("/api/notes/{note_id}", "get", "404")]:
        assert spec["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"] == error_shape
    assert set(spec["components"]["schemas"]["ErrorBody"]["properties"]) == {"code", "message", "details"}
