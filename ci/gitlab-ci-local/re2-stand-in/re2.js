"use strict";
// RE2's constructor and methods as gitlab-ci-local calls them (new RE2(pattern, flags),
// then String.prototype.match), served by JavaScript's own RegExp.
class RE2 extends RegExp {
  constructor(pattern, flags) {
    super(pattern instanceof RegExp ? pattern.source : pattern, flags);
  }
}
module.exports = RE2;
module.exports.default = RE2;
