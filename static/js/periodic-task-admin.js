// The periodic task admin form: show the chosen crontab in words under the field
// (django-celery-beat's inline script, moved here for the Content-Security-Policy).
(function ($) {
  "use strict";
  $(function () {
    var source = document.getElementById("readable-crontabs");
    if (!source) {
      return;
    }
    var readable = JSON.parse(source.textContent);
    var help = $(".field-crontab .help");
    var original = help.text();
    $(".field-crontab_translation").hide();
    $(".field-crontab").change(function () {
      var words = readable[$("#id_crontab").val()];
      help.text(original).append($("<br>"), document.createTextNode("Translation: " + (words || "")));
    });
  });
})(django.jQuery);
