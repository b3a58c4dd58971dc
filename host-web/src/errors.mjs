// The error boundary of the JavaScript host, as host-cni/host/src/error.rs is the native one:
// every failure of a call into the component leaves as one `CniError` — a CNI code and the
// message `hereabouts` would print for it. Each conversion from a WIT error is written once, here,
// in the same words as the native `describe_*` functions (host-cni/host/src/bindings.rs).

/** CNI error codes (host-cni/host/src/error.rs `Code`). */
export const Code = Object.freeze({
  Io: 5, Decode: 6, InvalidConfig: 7, TryAgainLater: 11, Exhausted: 100, AddressUnavailable: 101, Internal: 102,
});

/** A failed call: `{code, msg}` as `hereabouts` prints it. An invalid config also says which
 *  field (`field`) and what is wrong with it (`fieldMessage`), so a UI can show it beside the
 *  field, and, when the ipam section was rejected while reading it, the rule id `check` reports
 *  it under (`rule`). */
export class CniError extends Error {
  constructor(code, msg, problem = undefined) {
    super(msg);
    this.name = 'CniError';
    this.code = code;
    this.msg = msg;
    if (problem) {
      this.field = problem.field;
      this.fieldMessage = problem.message;
      if (problem.rule) this.rule = problem.rule;
    }
  }

  toJSON() {
    return { code: this.code, msg: this.msg };
  }
}

/** A WIT `field-error` or `config-problem`: `field: message`, code 7. */
const invalid = (problem) => new CniError(Code.InvalidConfig, `${problem.field}: ${problem.message}`, problem);

/** A WIT `store-error` (`describe_store_error`, `From<&StoreError> for CniError`). */
export function fromStoreError(error) {
  switch (error.tag) {
    case 'unavailable': return new CniError(Code.TryAgainLater, `store unavailable: ${error.val}`);
    case 'corrupt': return new CniError(Code.Io, `store data is corrupt: ${error.val}`);
    case 'failed': return new CniError(Code.Io, `store failed: ${error.val}`);
    default: return new CniError(Code.Internal, `unknown store error ${JSON.stringify(error)}`);
  }
}

/** A WIT `ipam-error` (`describe_ipam_error`, `From<&IpamError> for CniError`). */
export function fromIpamError(error) {
  switch (error.tag) {
    case 'invalid-config': return invalid(error.val);
    case 'exhausted': return new CniError(Code.Exhausted, error.val);
    case 'address-unavailable': return new CniError(Code.AddressUnavailable, error.val);
    case 'contention': return new CniError(Code.TryAgainLater, error.val);
    case 'store': return fromStoreError(error.val);
    default: return new CniError(Code.Internal, `unknown allocator error ${JSON.stringify(error)}`);
  }
}

/** A WIT `config-error` of `read-config` / `read-plan-document` (`describe_config_error`,
 *  `From<ReadError> for CniError`): text that is not JSON is 6, anything else 7. */
export function fromConfigError(error) {
  switch (error.tag) {
    case 'malformed': return new CniError(Code.Decode, error.val);
    case 'invalid': return invalid(error.val);
    default: return new CniError(Code.Internal, `unknown config error ${JSON.stringify(error)}`);
  }
}
