"""The adversarial corpus: malicious checkpoints built opcode by opcode at test time.

Every case carries a canary side effect (creating a file) and cites the peer advisory or
technique it reproduces. ``runner`` says how the payload really fires, which
``test_corpus.py`` proves in a subprocess: ``pickle`` (``pickle.loads`` of the bytes),
``torch`` (``torch.load(weights_only=False)`` of the file), or ``""`` when no stock loader
reaches it (a hidden member, an unregistered extension code, a TorchScript constant) but a
scanner must still flag it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.adversarial import nonzip as N
from tests.adversarial import payloads as B
from tests.adversarial import pickles as P
from tests.adversarial import usage_cases as U


@dataclass(frozen=True)
class Case:
    id: str
    technique: str
    citation: str
    make: Callable[[str], bytes]  # canary path -> file bytes
    runner: str = "pickle"  # pickle | torch | "" (not reachable by a stock loader)
    filename: str = ""  # defaults to <id>.pt

    def write(self, directory: Path, canary: Path) -> Path:
        path = directory / (self.filename or f"{self.id}.pt")
        path.write_bytes(self.make(str(canary)))
        return path


PS = "picklescan"
_TORCH_TAR = ("torch 2.13 serialization._legacy_load: tarfile.open(fileobj=f, mode='r:') is "
              "tried first on every non-zip file; CPython tarfile accepts V7 headers (ckpt-guard "
              "issue 8 class 2)")
_TORCH_MAGIC = ("torch 2.13 serialization._legacy_load: 'magic_number != MAGIC_NUMBER' compares "
                "the unpickled value (ckpt-guard issue 8 class 4)")
_FRAMES = ("CPython Modules/_pickle.c load_frame/_Unpickler_ReadFromFile: a frame not served by "
           "peek() is read whole, the next load starts at its end (ckpt-guard issue 8 class 9)")


def _tar(where: str):  # noqa: ANN202 - a Case builder
    return lambda c: N.old_tar(c, where)
CASES: list[Case] = [
    Case("global_reduce_posix_system", "GLOBAL posix.system + REDUCE (what pickle writes "
         "for os.system)", "picklescan README's canonical os.system payload; "
         "protectai/modelscan unsafe_globals baseline", B._raw(lambda c: P.system_call(B._touch(c)))),
    Case("global_reduce_os_system", "GLOBAL os.system + REDUCE", "same, portable spelling",
         B._raw(lambda c: P.system_call(B._touch(c), module="os"))),
    Case("inst_os_system", "INST opcode (protocol 0) calling os.system",
         "picklescan splits GLOBAL/INST arguments on a space (formats.md); protocol-0 INST "
         "path", lambda c: P.MARK + P.string_text(B._touch(c)) + P.inst("os", "system") + P.STOP),
    Case("obj_os_system", "OBJ opcode: MARK callable args OBJ",
         "protocol-1 OBJ instantiation path (fickling symbolic interpreter covers OBJ)",
         lambda c: P.proto(1) + P.MARK + P.global_("os", "system") + P.binunicode(B._touch(c))
         + P.OBJ + P.STOP),
    Case("newobj_functools_partial", "NEWOBJ builds functools.partial(posix.system, cmd), "
         "then REDUCE calls it", "fickling PR #210 'functools.partial wrapper bypass'",
         B._raw(B._partial_newobj)),
    Case("newobj_ex_functools_partial", "NEWOBJ_EX variant of the partial wrapper",
         "fickling PR #210 'functools.partial wrapper bypass' (protocol 4 NEWOBJ_EX)",
         B._raw(B._partial_newobj_ex, 4)),
    Case("build_setstate_injection", "BUILD plants __setstate__=posix.system in an "
         "argparse.Namespace, a second BUILD calls it", "fickling GHSA-mhc9-48gj-9gp3 "
         "(REDUCE+BUILD sequence bypass); modelscan#85 (BUILD is an arbitrary setattr)",
         B._raw(B._setstate_injection)),
    Case("build_on_global_object", "BUILD slotstate setattr() on a global object itself",
         "protectai/modelscan#85 and #89 (BUILD overwrites attributes of numpy.prod)",
         B._raw(B._build_on_global), runner=""),
    Case("build_on_allowlisted_global", "BUILD on an allowlisted torch function object "
         "(only allowlisted names in the stream)", "protectai/modelscan#85 technique "
         "against an allowlist", B._raw(B._build_on_allowlisted_global), runner=""),
    Case("stack_global_memo_shuffle", "STACK_GLOBAL operands from memo slots overwritten "
         "with PUT/BINPUT/LONG_BINPUT/MEMOIZE and read with GET/LONG_BINGET",
         "mmaitre314/picklescan#22 (memo confusion, ImaginaryCTF 'Safe Pickle'); "
         "protectai/modelscan#85", B._raw(B._memo_shuffle, 4)),
    Case("stack_global_off_by_one", "decoy strings between the memo GETs and STACK_GLOBAL",
         "picklescan STACK_GLOBAL walk-back off-by-one (formats.md); GHSA-9gvj-pp9x-gcfr "
         "'pickle parsing logic flaw' (picklescan PR #46)", B._raw(B._off_by_one, 4)),
    Case("stack_global_binstring", "STACK_GLOBAL operands pushed with BINSTRING "
         "(decoded as str by Python 3)", "protectai/modelscan#338 §5 STACK_GLOBAL operand "
         "type confusion", B._raw(B._nonunicode_stack_global(P.binstring), 4)),
    Case("stack_global_short_binstring", "STACK_GLOBAL operands pushed with SHORT_BINSTRING",
         "protectai/modelscan#338 §5", B._raw(B._nonunicode_stack_global(P.short_binstring), 4)),
    Case("stack_global_text_string", "STACK_GLOBAL operands pushed with protocol-0 STRING "
         "and UNICODE text opcodes", "protectai/modelscan#338 §5",
         B._raw(B._nonunicode_stack_global(P.string_text), 4)),
    Case("stack_global_binbytes", "STACK_GLOBAL operands as bytes (Python refuses, scanners "
         "crashed on them)", "protectai/modelscan#338 §5 (bytes variant, TypeError in "
         "ModelScan)", B._raw(B._nonunicode_stack_global(lambda s: P.short_binbytes(s.encode())), 4), runner=""),
    Case("stack_global_bytearray8", "STACK_GLOBAL operands as BYTEARRAY8 (unhashable)",
         "protectai/modelscan#338 §5c", B._raw(B._nonunicode_stack_global(lambda s: P.bytearray8(s.encode())), 5),
         runner=""),
    Case("stack_global_computed_rot13", "STACK_GLOBAL operands computed by allowlisted "
         "_codecs.encode(…, 'rot13') calls; no dangerous name in any string",
         "protectai/modelscan#338 §6 (obfuscation); formats.md 'computed values'",
         B._raw(B._computed_stack_global, 4)),
    Case("ext1_unregistered", "EXT1 extension-registry reference",
         "nltk/nltk PR #3757 (EXT1/2/4 bypass find_class on a warm copyreg cache)",
         lambda c: P.proto(2) + P.ext1(0x7F) + P.MARK + P.binunicode(B._touch(c)) + P.TUPLE
         + P.REDUCE + P.STOP, runner=""),
    Case("ext2_registered_in_stream", "copyreg.add_extension then EXT2 in the same stream",
         "nltk/nltk PR #3757 (EXT opcodes)", B._raw(B._ext_registered(P.ext2, 0xBEEF))),
    Case("ext4_registered_in_stream", "copyreg.add_extension then EXT4",
         "nltk/nltk PR #3757 (EXT opcodes)", B._raw(B._ext_registered(P.ext4, 0x12345678, "os"))),
    Case("builtins_getattr_import", "getattr(__import__('os'), 'system') chain",
         "protectai/modelscan#331 (importlib/getattr chain)", B._raw(B._getattr_import)),
    Case("operator_attrgetter_importlib", "operator.attrgetter + importlib.import_module",
         "picklescan PR #25 comment on operator.attrgetter; GHSA-m273-6v24-x4m4 / "
         "GHSA-955r-x9j8-7rhh (_operator, picklescan PR #53/#54); picklescan#66",
         B._raw(B._attrgetter)),
    Case("pkgutil_resolve_name", "pkgutil.resolve_name('os:system')",
         "picklescan GHSA-vvpj-8cmc-gx39 (universal bypass via pkgutil.resolve_name)",
         B._raw(lambda c: P.call(P.call(P.global_("pkgutil", "resolve_name"),
                                      P.binunicode("os:system")), P.binunicode(B._touch(c))))),
    Case("runpy_run_code", "runpy._run_code(source, {}) execs a string",
         "picklescan PR #27 'Mark runpy module as dangerous'",
         B._raw(lambda c: P.call(P.global_("runpy", "_run_code"), P.binunicode(B._py(c)),
                               P.EMPTY_DICT))),
    Case("cprofile_run", "cProfile.run(source) execs a string",
         "picklescan GHSA-9w88-8rmg-7g2p (cProfile.runctx, PR #49)",
         B._raw(lambda c: P.call(P.global_("cProfile", "run"), P.binunicode(B._py(c))))),
    Case("types_codetype", "types.CodeType / FunctionType construction",
         "formats.md peers' missing denylist (types.CodeType); picklescan#36 call-flow",
         B._raw(lambda c: P.call(P.global_("types", "FunctionType"),
                               P.global_("types", "CodeType"), P.EMPTY_DICT)), runner=""),
    Case("numpy_runstring", "numpy.testing._private.utils.runstring(source, {})",
         "infiniflow/ragflow#1240 (numpy internals run code); protectai/modelscan#85",
         B._raw(lambda c: P.call(P.global_("numpy.testing._private.utils", "runstring"),
                               P.binunicode(B._py(c)), P.EMPTY_DICT))),
    Case("numpy_builtins_dict_get", "builtins 'dict.get' on numpy.__builtins__ → exec",
         "protectai/modelscan#89 (numpy.__builtins__)", B._raw(B._dict_get_builtins, 5)),
    Case("attribute_chain_torch_utils", "dotted name through an allowlisted module: "
         "torch._utils 'torch.serialization.os.system'",
         "protectai/modelscan#338 §10 (introspection chains through allowed modules)",
         B._raw(lambda c: P.call(P.global_("torch._utils", "torch.serialization.os.system"),
                               P.binunicode(B._touch(c))), 4)),
    Case("attribute_chain_pathlib_touch", "pathlib 'Path.touch' unbound method on a Path",
         "brief: pathlib.Path.touch; picklescan GHSA list of stdlib methods (PR #48)",
         B._raw(lambda c: P.call(P.global_("pathlib", "Path.touch"),
                               P.call(P.global_("pathlib", "Path"), P.binunicode(c))), 4)),
    Case("logging_filehandler", "logging.FileHandler(canary) creates the file",
         "picklescan CVE-2026-56304 (logging.FileHandler creates files)",
         B._raw(lambda c: P.call(P.global_("logging", "FileHandler"), P.binunicode(c)))),
    Case("io_fileio", "_io.FileIO(canary, 'w') creates the file",
         "fickling PR #210 (_io.FileIO file-handling bypass)",
         B._raw(lambda c: P.call(P.global_("_io", "FileIO"), P.binunicode(c),
                               P.binunicode("w")))),
    Case("torch_jit_load_ref", "torch.jit.load / torch._C references (loaders in torch)",
         "pytorch/pytorch PR #143403 ('There is no safe mode for jit.load')",
         B._raw(lambda c: P.call(P.global_("torch.jit", "load"), P.binunicode(c)) + P.POP
              + P.global_("torch._C", "_get_tracing_state")), runner=""),
    Case("torch_load_bytesio", "torch.load(_io.BytesIO(embedded zip)) — a nested torch.load",
         "formats.md nested torch.load; protectai/modelscan#338 §11 (indirect loading)",
         B._raw(lambda c: P.call(P.global_("torch", "load"), P.call(
             P.global_("_io", "BytesIO"), P.binbytes(B._zip_replaced(c))))), runner=""),
    Case("torch_fx_exec", "torch.fx.graph_module.reduce_graph_module exec()s source",
         "torch.fx deserialisation executes code (picklescan GHSA-4whj-rm5r-c2v8 family: "
         "torch submodules that run code)", B._raw(B._fx_exec)),
    Case("nested_pickle_loads", "pickle.loads on embedded bytes",
         "picklescan GHSA-84r2-jw7c-4r5q; protectai/modelscan#267",
         B._raw(B._nested(P.global_("pickle", "loads")))),
    Case("nested_c_pickle_loads", "_pickle.loads on embedded bytes",
         "protectai/modelscan PR #270 (detect _pickle)",
         B._raw(B._nested(P.global_("_pickle", "loads")))),
    Case("nested_pickle_codecs", "pickle.loads(_codecs.encode(text, 'latin1'))",
         "mmaitre314/picklescan PR #25 (malicious13 test)", B._raw(B._nested_codecs)),
    Case("nested_torch_load_bytes", "torch.storage._load_from_bytes on an embedded malicious "
         "torch zip (torch.load(weights_only=False) inside)", "pytorch torch/storage.py "
         "_load_from_bytes; formats.md nested torch.load", B._raw(B._nested_torch_bytes)),
    Case("transformers_indirect_load", "transformers getattribute_from_module chain",
         "protectai/modelscan#338 §11 (indirect model loading)",
         B._raw(lambda c: P.call(P.global_("transformers.models.auto.auto_factory",
                                         "getattribute_from_module"),
                               P.global_("transformers.models.auto.tokenization_auto",
                                         "AutoTokenizer"), P.binunicode("from_pretrained"))),
         runner=""),
    # ---- containers ---------------------------------------------------------------------
    Case("zip_data_pkl_replaced", "real torch.save zip, data.pkl replaced by the payload",
         "JFrog 'PickleScan zero-days' (CVE-2025-10155/10156/10157) attack surface: torch zip "
         "data.pkl", B._zip_replaced, runner="torch"),
    Case("zip_data_pkl_spliced", "real torch.save zip, payload spliced as a hidden key next "
         "to the real tensors", "realistic variant of the above", B._zip_spliced, runner="torch"),
    Case("zip_second_pkl_member", "payload in a second .pkl member of the zip",
         "promptfoo/modelaudit PR #1043 (hidden PyTorch ZIP pickles after data.pkl)",
         B._zip_second_member, runner=""),
    Case("zip_member_storage_name", "payload pickle hidden under a storage-like name "
         "(archive/data/99)", "promptfoo/modelaudit PR #1043 (storage-path pickle payloads)",
         B._zip_misleading_member_name, runner=""),
    Case("zip_bad_crc", "data.pkl with a wrong CRC (torch does not check CRCs)",
         "JFrog CVE-2025-10156 (bad CRC crashes the scanner, torch loads); pytorch PR #28858",
         B._zip_bad_crc, runner="torch"),
    Case("zip_local_central_name_mismatch", "local header names a different file than the "
         "central directory", "Sonatype CVE-2025-1944 / picklescan GHSA-7q5r-7gvp-wc82",
         B._zip_name_mismatch, runner="torch"),
    Case("zip_flag_bits", "local header of data.pkl claims encryption (flag bits 0 and 6); "
         "the central directory does not; torch's miniz reads it",
         "Sonatype CVE-2025-1945 / picklescan GHSA-w8jq-xcqf-f792", B._zip_flag_bits,
         runner="torch"),
    Case("zip_duplicate_data_pkl_last", "two data.pkl entries, the malicious one last (the "
         "one torch loads)", "zip filename confusion family: Sonatype CVE-2025-1944; formats.md "
         "'scan what torch would load'", B._zip_duplicate(True), runner="torch"),
    Case("zip_duplicate_data_pkl_first", "two data.pkl entries, the malicious one first "
         "(a reader keeping the first name would scan only the decoy)",
         "zip filename confusion family: Sonatype CVE-2025-1944", B._zip_duplicate(False),
         runner=""),
    Case("zip_two_central_directories", "ZIP64 locator pointing at a second central "
         "directory: zipfile reads the clean one, torch's miniz the payload's",
         "miniz mz_zip_reader_read_central_dir vs CPython zipfile _EndRecData64 (issue 8 class "
         "3); zip parser differentials, Sonatype CVE-2025-1944 family",
         B._zip_two_directories, runner="torch"),
    Case("zip_duplicate_by_sort", "three data.pkl names equal after ASCII case folding, the "
         "payload in the middle: miniz's heap sort picks it (neither first nor last)",
         "miniz mz_zip_reader_sort_central_dir_offsets_by_filename + "
         "mz_zip_locate_file_binary_search; Sonatype CVE-2025-1944 family",
         B._zip_duplicate_by_sort, runner="torch"),
    Case("zip_kelvin_sign_decoy", "decoy member data.p\u212al (KELVIN SIGN): str.lower() "
         "calls it data.pkl, miniz's ASCII-only folding does not",
         "Unicode case-folding confusion (UTS #21: U+212A lowercases to 'k'); miniz MZ_TOLOWER",
         B._zip_kelvin_sign, runner="torch"),
    Case("zip_deflated_data_pkl", "data.pkl stored deflated", "modelaudit compressed members "
         "(picklescan PR #68 compressed artifacts)", B._zip_deflated, runner="torch"),
    Case("zip_misleading_extension", "malicious torch zip named .txt (torch.load does not care)",
         "Sonatype CVE-2025-1889 / picklescan GHSA-769v-p64c-89pr (non-standard extensions)",
         B._zip_replaced, runner="torch", filename="zip_misleading_extension.txt"),
    Case("raw_pickle_as_pt", "a bare pickle named model.bin (torch.load's legacy path "
         "unpickles it)", "JFrog CVE-2025-10155 (file-extension bypass); formats.md "
         "magic-number tricks", B._raw_pickle_as_pt, runner="torch",
         filename="raw_pickle_as_pt.bin"),
    Case("legacy_magic_pickle", "legacy format: payload in the magic-number pickle",
         "formats.md 'magic-number tricks' (picklescan reads the magic with genops)",
         B._legacy_header(0), runner="torch"),
    Case("legacy_sys_info_pickle", "legacy format: payload in the sys_info header pickle",
         "formats.md legacy five-pickle layout", B._legacy_header(2), runner="torch"),
    Case("legacy_storage_keys_pickle", "legacy format: payload in the storage-keys pickle",
         "formats.md legacy five-pickle layout", B._legacy_header(4), runner="torch"),
    # ---- issue 8 class 2: torch tries tarfile first on every non-zip file -------------------
    Case("tar_v7_count", "PyTorch <= 0.3 tar (old V7 headers, no ustar magic), payload in the "
         "storages count pickle", _TORCH_TAR, _tar("count"), runner="torch", filename="tar_v7_count.bin"),
    Case("tar_v7_storage_args", "PyTorch <= 0.3 tar (old V7 headers, no ustar magic), payload in the "
         "per-storage argument (before raw data) pickle", _TORCH_TAR, _tar("storage_args"), runner="torch", filename="tar_v7_storage_args.bin"),
    Case("tar_v7_views", "PyTorch <= 0.3 tar (old V7 headers, no ustar magic), payload in the "
         "storage_views pickle", _TORCH_TAR, _tar("views"), runner="torch", filename="tar_v7_views.bin"),
    Case("tar_v7_tensor_count", "PyTorch <= 0.3 tar (old V7 headers, no ustar magic), payload in the "
         "tensors count pickle", _TORCH_TAR, _tar("tensor_count"), runner="torch", filename="tar_v7_tensor_count.bin"),
    Case("tar_v7_tensor_args", "PyTorch <= 0.3 tar (old V7 headers, no ustar magic), payload in the "
         "per-tensor argument pickle", _TORCH_TAR, _tar("tensor_args"), runner="torch", filename="tar_v7_tensor_args.bin"),
    Case("tar_v7_pickle", "PyTorch <= 0.3 tar (old V7 headers, no ustar magic), payload in the "
         "'pickle' member pickle", _TORCH_TAR, _tar("pickle"), runner="torch", filename="tar_v7_pickle.bin"),
    Case("tar_ustar_pickle", "PyTorch <= 0.3 tar with ustar headers, payload in 'pickle'",
         _TORCH_TAR, lambda c: N.old_tar(c, "pickle", magic=b"ustar\x0000"), runner="torch"),
    Case("tar_named_like_legacy", "a tar whose first member is named with the legacy magic "
         "pickle: first bytes say legacy stream, torch reads a tar", _TORCH_TAR,
         N.tar_named_like_legacy, runner="torch"),
    Case("safetensors_also_tar", "a valid safetensors file whose JSON header hides a V7 tar "
         "header; named .bin torch.load reads it as a tar (no routing by content)", _TORCH_TAR
         + "; safetensors format spec (8-byte header length, JSON header)",
         N.safetensors_also_tar, runner="torch", filename="safetensors_also_tar.bin"),
    # ---- issue 8 class 4: the legacy magic number is compared by value ----------------------
    Case("legacy_magic_text_long", "legacy stream whose magic number is spelled as protocol-0 text L...L; payload in "
         "sys_info", _TORCH_MAGIC, N.magic_text_long, runner="torch"),
    Case("legacy_magic_text_int", "legacy stream whose magic number is spelled as protocol-0 INT; payload in "
         "sys_info", _TORCH_MAGIC, N.magic_text_int, runner="torch"),
    Case("legacy_magic_long1_no_proto", "legacy stream whose magic number is spelled as LONG1 without PROTO; payload in "
         "sys_info", _TORCH_MAGIC, N.magic_long1_no_proto, runner="torch"),
    Case("legacy_magic_long4", "legacy stream whose magic number is spelled as LONG4; payload in "
         "sys_info", _TORCH_MAGIC, N.magic_long4, runner="torch"),
    Case("legacy_magic_proto5_framed", "legacy stream whose magic number is spelled as protocol 5 with a FRAME; payload in "
         "sys_info", _TORCH_MAGIC, N.magic_protocol_5_framed, runner="torch"),
    Case("legacy_magic_decimal", "legacy stream whose magic number is decimal.Decimal(...) "
         "(equal by value, built by a call); payload in sys_info", _TORCH_MAGIC,
         N.magic_decimal, runner="torch"),
    # ---- issue 8 class 9: a STOP before the end of a FRAME hides what follows ----------------
    Case("legacy_frame_decoy_5000", "magic-number pickle STOPs inside a 5000-byte FRAME holding a "
         "clean decoy stream; torch's next pickle.load starts at the frame's end", _FRAMES,
         N.frame_decoy(5000), runner="torch"),
    Case("legacy_frame_decoy_131072", "magic-number pickle STOPs inside a 131072-byte FRAME holding a "
         "clean decoy stream; torch's next pickle.load starts at the frame's end", _FRAMES,
         N.frame_decoy(131072), runner="torch"),
    Case("legacy_frame_decoy_200000", "magic-number pickle STOPs inside a 200000-byte FRAME holding a "
         "clean decoy stream; torch's next pickle.load starts at the frame's end", _FRAMES,
         N.frame_decoy(200000), runner="torch"),
    Case("torchscript_constants_pkl", "TorchScript archive with a malicious constants.pkl",
         "pytorch/pytorch PR #169570 (crafted constants.pkl); PR #143403", B._torchscript_constants,
         runner=""),
]

# Issue 8 class 1 (functions of packages installed beside torch, called at load) and class 13
# (a construct CPython accepts must not end the analysis early).
CASES += [
    Case("typing_extensions_get_type_hints", "typing_extensions.get_type_hints over a "
         "Namespace whose __annotations__ hold Python source (evaluated with eval)",
         "issue 8 class 1: a function of a package always installed beside torch, outside "
         "every classic deny list", U.get_type_hints),
    Case("typing_extensions_evaluate_forward_ref", "typing_extensions.evaluate_forward_ref "
         "over a ForwardRef of Python source", "issue 8 class 1", U.evaluate_forward_ref),
    Case("typing_extensions_in_torch_zip", "get_type_hints payload as the data.pkl of a real "
         "torch.save archive", "issue 8 class 1 (what torch.load(weights_only=False) runs)",
         U.get_type_hints_in_torch_zip, runner="torch"),
    Case("function_passed_to_rebuild_from_type", "a function passed as an argument to the "
         "allowlisted torch._tensor._rebuild_from_type_v2, which calls it",
         "issue 8 class 1: judge globals by use, including calls made by allowlisted "
         "callees (torch/_tensor.py _rebuild_from_type_v2: ret = func(*args))",
         U.function_through_rebuild_from_type),
    Case("payload_after_list_setitem", "SETITEM on a list (valid for CPython) before the "
         "payload", "issue 8 class 13: an opcode the scanner misreads as malformed hides "
         "what follows", U.payload_after_list_setitem),
]

BY_ID = {c.id: c for c in CASES}


def build_all(directory: Path, canary: Path) -> dict[str, Path]:
    """Write every case into ``directory``; all share one ``canary`` path."""
    return {case.id: case.write(directory, canary) for case in CASES}
