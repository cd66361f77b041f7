// tunnel-probe: what the tunnel e2e test (operator/tests/tunnel.rs) runs on a worker to
// stand for the things a tenant apiserver calls on its nodes besides kubelets: a
// validating admission webhook and an aggregated API server. Standard library only, so
// hack/build-images.sh builds it with no module download.
//
// HTTPS on :8443 with /tls/tls.crt and /tls/tls.key (a Secret the test creates):
//   POST /validate                      AdmissionReview v1: denies an object whose name
//                                       starts with "forbidden", allows the rest; the
//                                       verdict names this node.
//   GET  /apis, /apis/tunnel.nestor.dev, /apis/tunnel.nestor.dev/v1
//                                       discovery of group tunnel.nestor.dev/v1, resource
//                                       "echoes" (cluster scoped, get and list).
//   GET  /apis/tunnel.nestor.dev/v1/echoes
//                                       a List with one Echo naming this node.
//   GET  /healthz                       "ok".
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
)

const group = "tunnel.nestor.dev"

func node() string {
	if name := os.Getenv("NODE_NAME"); name != "" {
		return name
	}
	return "unknown"
}

func writeJSON(w http.ResponseWriter, value any) {
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(value); err != nil {
		log.Printf("encode: %v", err)
	}
}

func validate(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var review struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Request    struct {
			UID  string `json:"uid"`
			Name string `json:"name"`
		} `json:"request"`
	}
	if err := json.Unmarshal(body, &review); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	allowed := !strings.HasPrefix(review.Request.Name, "forbidden")
	response := map[string]any{"uid": review.Request.UID, "allowed": allowed}
	if !allowed {
		response["status"] = map[string]any{
			"code":    403,
			"message": fmt.Sprintf("tunnel-probe on node %s denies %q", node(), review.Request.Name),
		}
	}
	log.Printf("validate %q: allowed=%v", review.Request.Name, allowed)
	writeJSON(w, map[string]any{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

func groupVersion() map[string]any {
	return map[string]any{"groupVersion": group + "/v1", "version": "v1"}
}

func main() {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") })
	mux.HandleFunc("/validate", validate)
	mux.HandleFunc("/apis", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, map[string]any{"kind": "APIGroupList", "apiVersion": "v1", "groups": []any{
			map[string]any{"name": group, "versions": []any{groupVersion()}, "preferredVersion": groupVersion()},
		}})
	})
	mux.HandleFunc("/apis/"+group, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, map[string]any{"kind": "APIGroup", "apiVersion": "v1", "name": group,
			"versions": []any{groupVersion()}, "preferredVersion": groupVersion()})
	})
	mux.HandleFunc("/apis/"+group+"/v1", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, map[string]any{"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group + "/v1",
			"resources": []any{map[string]any{"name": "echoes", "singularName": "echo", "namespaced": false,
				"kind": "Echo", "verbs": []string{"get", "list"}}}})
	})
	mux.HandleFunc("/apis/"+group+"/v1/echoes", func(w http.ResponseWriter, r *http.Request) {
		log.Printf("list echoes for %s", r.Header.Get("X-Remote-User"))
		writeJSON(w, map[string]any{"kind": "EchoList", "apiVersion": group + "/v1", "metadata": map[string]any{},
			"items": []any{map[string]any{"kind": "Echo", "apiVersion": group + "/v1",
				"metadata": map[string]any{"name": "from-" + node()}}}})
	})
	log.Printf("tunnel-probe on node %s serving :8443", node())
	log.Fatal(http.ListenAndServeTLS(":8443", "/tls/tls.crt", "/tls/tls.key", mux))
}
