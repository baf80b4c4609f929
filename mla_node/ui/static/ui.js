// The web interface's only script (the Content-Security-Policy allows no inline script).
// Evidence file upload with a progress bar: the file's bytes go to POST /ui/attachments with the
// session cookie and the page's CSRF token; the returned id joins the form as a hidden input.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var input = document.getElementById("file");
  var button = document.getElementById("upload-button");
  if (!input || !button) { return; }
  var bar = document.getElementById("upload-progress");
  var list = document.getElementById("uploaded");
  var template = document.getElementById("uploaded-item");
  var error = document.getElementById("upload-error");
  var word = document.getElementById("uploaded-word").textContent;
  button.addEventListener("click", function () {
    var file = input.files && input.files[0];
    if (!file) { input.focus(); return; }
    var xhr = new XMLHttpRequest();
    xhr.open("POST", "/ui/attachments");
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.setRequestHeader("X-CSRF-Token", input.dataset.csrf);
    xhr.setRequestHeader("X-File-Name", encodeURIComponent(file.name));
    xhr.upload.addEventListener("progress", function (e) {
      if (e.lengthComputable) { bar.value = Math.round(100 * e.loaded / e.total); }
    });
    xhr.addEventListener("load", function () {
      if (xhr.status !== 201) {
        error.hidden = false;
        error.textContent = xhr.status + " " + xhr.responseText.slice(0, 300);
        return;
      }
      var body = JSON.parse(xhr.responseText);
      bar.value = 100;
      var item = template.content.firstElementChild.cloneNode(true);
      item.querySelector("input").value = body.id;
      item.querySelector("span").textContent = word + ": " + file.name + " (" + body.id + ")";
      item.dataset.id = body.id;
      list.appendChild(item);
      input.value = "";
    });
    xhr.addEventListener("error", function () { error.hidden = false; error.textContent = "network error"; });
    xhr.send(file);
  });
});
