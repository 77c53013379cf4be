// The login page: after logging in, back to the view the address shows (`/#/jobs/<id>` when a
// token expired there), which the server never sees: a fragment stays in the browser.
"use strict";
const next = document.getElementById("next");
if (next && next.value === "/" && window.location.hash.length > 1) {
  next.value = "/" + window.location.hash;
}
