package apigw

import (
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/sandgate/sandgate/infra/local/template"
)

// An HTTP API with a CorsConfiguration answers preflight requests itself, whatever its
// routes, and adds the CORS headers to its integrations' answers for an allowed origin,
// overriding any the integration set
// (https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-cors.html).

// allowedOrigin returns the Access-Control-Allow-Origin value for origin ("" when not
// allowed).
func allowedOrigin(c *template.CORS, origin string) string {
	if origin == "" {
		return ""
	}
	for _, o := range c.AllowOrigins {
		switch {
		case o == "*":
			return "*"
		case strings.EqualFold(o, origin):
			return origin
		}
	}
	return ""
}

// preflight answers an OPTIONS request that asks whether a cross-origin call may be made.
func preflight(w http.ResponseWriter, r *http.Request, c *template.CORS) {
	h := w.Header()
	if allow := allowedOrigin(c, r.Header.Get("Origin")); allow != "" {
		h.Set("Access-Control-Allow-Origin", allow)
		if len(c.AllowMethods) > 0 {
			h.Set("Access-Control-Allow-Methods", strings.Join(c.AllowMethods, ","))
		}
		if len(c.AllowHeaders) > 0 {
			h.Set("Access-Control-Allow-Headers", strings.Join(c.AllowHeaders, ","))
		}
		if c.MaxAge > 0 {
			h.Set("Access-Control-Max-Age", strconv.Itoa(c.MaxAge))
		}
		if c.AllowCredentials {
			h.Set("Access-Control-Allow-Credentials", "true")
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// isPreflight reports a CORS preflight request.
func isPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Origin") != "" && r.Header.Get("Access-Control-Request-Method") != ""
}

// corsWriter adds the CORS headers of an allowed origin to the answer.
type corsWriter struct {
	http.ResponseWriter
	c      *template.CORS
	allow  string
	header bool
}

func (w *corsWriter) WriteHeader(status int) {
	if !w.header {
		w.header = true
		h := w.ResponseWriter.Header()
		for _, k := range []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Access-Control-Expose-Headers"} {
			h.Del(k)
		}
		h.Set("Access-Control-Allow-Origin", w.allow)
		if w.c.AllowCredentials {
			h.Set("Access-Control-Allow-Credentials", "true")
		}
		if len(w.c.ExposeHeaders) > 0 {
			h.Set("Access-Control-Expose-Headers", strings.Join(w.c.ExposeHeaders, ","))
		}
		if w.allow != "*" && !slices.Contains(h.Values("Vary"), "Origin") {
			h.Add("Vary", "Origin")
		}
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *corsWriter) Write(b []byte) (int, error) {
	if !w.header {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}
