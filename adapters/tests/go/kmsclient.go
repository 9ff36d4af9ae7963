// A stand-in for kms-go, using only Go's standard library: the same
// net/http transport MinIO uses, request bodies streamed through a JSON
// encoder (unknown length, so Go sends them chunked), keep-alive
// connections, and MinIO's SSE-KMS call sequence. Driven by
// adapters/tests/go_client.rs; prints one "ok <step>" line per step and
// exits non-zero at the first failure.
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"strings"
)

var (
	client   *http.Client
	endpoint string
	reused   int
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "FAIL "+format+"\n", args...)
	os.Exit(1)
}

// call sends v (if not nil) as a streamed JSON body, like kms-go.
func call(method, path string, v interface{}, want int) []byte {
	var body io.Reader
	if v != nil {
		r, w := io.Pipe()
		go func() { w.CloseWithError(json.NewEncoder(w).Encode(v)) }()
		body = r
	}
	req, err := http.NewRequest(method, endpoint+path, body)
	if err != nil {
		fail("%s %s: %v", method, path, err)
	}
	if v != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	framing := map[string]string{}
	trace := &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) {
			if i.Reused {
				reused++
			}
		},
		WroteHeaderField: func(k string, v []string) { framing[k] = strings.Join(v, ",") },
	}
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	resp, err := client.Do(req)
	if err != nil {
		fail("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		fail("%s %s: reading the response: %v", method, path, err)
	}
	if resp.StatusCode != want {
		fail("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, want, out)
	}
	if v != nil && (framing["Transfer-Encoding"] != "chunked" || framing["Content-Length"] != "") {
		fail("%s %s: the body was not sent chunked: %v", method, path, framing)
	}
	return out
}

func decode(b []byte, v interface{}) {
	if err := json.Unmarshal(b, v); err != nil {
		fail("decoding %q: %v", b, err)
	}
}

func main() {
	endpoint = os.Getenv("KES_ENDPOINT")
	cert, err := tls.LoadX509KeyPair(os.Getenv("KES_CLIENT_CERT"), os.Getenv("KES_CLIENT_KEY"))
	if err != nil {
		fail("client certificate: %v", err)
	}
	ca, err := os.ReadFile(os.Getenv("KES_CA"))
	if err != nil {
		fail("CA: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	client = &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: 4,
	}}
	key := os.Getenv("KES_KEY")
	b64 := base64.StdEncoding.EncodeToString

	// MinIO at start-up: is the KMS there, and does its default key exist?
	call("GET", "/v1/status", nil, 200)
	call("GET", "/version", nil, 200)
	call("POST", "/v1/key/create/"+key, nil, 200)
	fmt.Println("ok create")

	// Per object: a data key bound to the bucket/object context, later
	// decrypted with the same context.
	ctx := []byte(`{"MinIO object":"bucket/object"}`)
	var dek struct{ Plaintext, Ciphertext []byte }
	decode(call("POST", "/v1/key/generate/"+key, map[string]interface{}{"context": ctx}, 200), &dek)
	if len(dek.Plaintext) != 32 || len(dek.Ciphertext) == 0 {
		fail("generate: %d-byte plaintext", len(dek.Plaintext))
	}
	fmt.Println("ok generate")
	var pt struct{ Plaintext []byte }
	decode(call("POST", "/v1/key/decrypt/"+key, map[string]interface{}{"ciphertext": dek.Ciphertext, "context": ctx}, 200), &pt)
	if !bytes.Equal(pt.Plaintext, dek.Plaintext) {
		fail("decrypt: wrong plaintext")
	}
	fmt.Println("ok decrypt")
	call("POST", "/v1/key/decrypt/"+key, map[string]interface{}{"ciphertext": dek.Ciphertext, "context": []byte("other")}, 400)
	fmt.Println("ok decrypt-wrong-context")

	var sealed struct{ Ciphertext []byte }
	decode(call("PUT", "/v1/key/encrypt/"+key, map[string]interface{}{"plaintext": []byte("hello")}, 200), &sealed)
	decode(call("PUT", "/v1/key/decrypt/"+key, map[string]interface{}{"ciphertext": sealed.Ciphertext}, 200), &pt)
	if string(pt.Plaintext) != "hello" {
		fail("encrypt/decrypt: got %q", pt.Plaintext)
	}
	fmt.Println("ok encrypt")

	imported := key + "-imported"
	raw := bytes.Repeat([]byte{7}, 32)
	call("PUT", "/v1/key/import/"+imported, map[string]interface{}{"key": raw, "cipher": "AES256"}, 200)
	fmt.Println("ok import")
	var mac struct{ Hmac []byte }
	decode(call("PUT", "/v1/key/hmac/"+imported, map[string]interface{}{"message": []byte("m")}, 200), &mac)
	if len(mac.Hmac) != 32 {
		fail("hmac: %d bytes", len(mac.Hmac))
	}
	decode(call("PUT", "/v1/key/hmac/"+key, map[string]interface{}{"message": []byte("m")}, 200), &mac)
	fmt.Printf("ok hmac %s\n", b64(mac.Hmac))

	// Key versions (an extension): the response field is a string, the type
	// KES v0.24's wire types declare for `version`, so Go clients decode it.
	rotated := key + "-rotated"
	call("POST", "/v1/key/create/"+rotated, nil, 200)
	var before struct{ Plaintext, Ciphertext []byte }
	decode(call("POST", "/v1/key/generate/"+rotated, map[string]interface{}{"context": ctx}, 200), &before)
	call("PUT", "/v1/key/rotate/"+rotated, nil, 200)
	var after struct {
		Plaintext, Ciphertext []byte
		Version               string `json:"version,omitempty"`
	}
	decode(call("POST", "/v1/key/generate/"+rotated, map[string]interface{}{"context": ctx, "version": ""}, 200), &after)
	var opened struct {
		Plaintext []byte
		Version   string `json:"version,omitempty"`
	}
	decode(call("POST", "/v1/key/decrypt/"+rotated, map[string]interface{}{"ciphertext": before.Ciphertext, "context": ctx}, 200), &opened)
	if after.Version != "2" || opened.Version != "1" || !bytes.Equal(opened.Plaintext, before.Plaintext) {
		fail("rotate: new version %q, old data opened as %q", after.Version, opened.Version)
	}
	fmt.Println("ok rotate")

	list := string(call("GET", "/v1/key/list/"+key+"*", nil, 200))
	if !strings.Contains(list, `"`+imported+`"`) {
		fail("list: %s", list)
	}
	fmt.Println("ok list")
	call("GET", "/v1/key/describe/"+key, nil, 200)
	call("DELETE", "/v1/key/delete/"+imported, nil, 200)
	call("DELETE", "/v1/key/delete/"+imported, nil, 404)
	fmt.Println("ok delete")
	fmt.Printf("reused %d\n", reused)
}
