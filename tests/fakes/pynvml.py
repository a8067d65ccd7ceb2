"""A scriptable fake of NVIDIA's ``pynvml`` module (package nvidia-ml-py) for tests without a GPU.

Same function names, argument order, constants and return shapes as the real module, and the
*real* error classes (imported from the installed ``pynvml``), so ``except
pynvml.NVMLError_NotSupported`` behaves exactly as against a driver. Return values use the
real ctypes structures (``c_nvmlUtilization_t``, ``c_nvmlMemory_t``) and the real
``nvmlFriendlyObject`` for processes.

A :class:`FakeNvml` *is* a module object: pass it to ``NvmlSampler(nvml=fake)`` or put it in
``sys.modules["pynvml"]``. Script it by mutating its :class:`FakeGpu` / :class:`FakeMig`
objects between seconds::

    fake = FakeNvml([FakeGpu(uuid="GPU-0", power_mw=250_000)])
    fake.gpus[0].failures["nvmlDeviceGetPowerUsage"] = pynvml.NVMLError_Unknown
    fake.advance(1)  # energy counters move by power x 1 s
"""

from __future__ import annotations

import types
from collections import Counter
from dataclasses import dataclass, field

import pynvml as _real  # importing it needs no driver: the library is loaded by nvmlInit()

# The real classes, re-exported: the fake raises exactly what the driver path raises.
NVMLError = _real.NVMLError
NVMLError_Uninitialized = _real.NVMLError_Uninitialized
NVMLError_InvalidArgument = _real.NVMLError_InvalidArgument
NVMLError_NotSupported = _real.NVMLError_NotSupported
NVMLError_NoPermission = _real.NVMLError_NoPermission
NVMLError_NotFound = _real.NVMLError_NotFound
NVMLError_GpuIsLost = _real.NVMLError_GpuIsLost
NVMLError_Unknown = _real.NVMLError_Unknown
NVMLError_DriverNotLoaded = _real.NVMLError_DriverNotLoaded
NVMLError_LibraryNotFound = _real.NVMLError_LibraryNotFound

# Every NVML_* constant and c_nvml* structure of the real module, at module level too, so
# `tests.fakes.pynvml.NVML_DEVICE_MIG_ENABLE` reads like `pynvml.NVML_DEVICE_MIG_ENABLE`.
globals().update({k: v for k, v in vars(_real).items() if k.startswith(("NVML_", "c_nvml"))})

Failure = type[BaseException] | BaseException


@dataclass
class FakeMig:
    """One MIG slice. Utilization, power, energy and temperature are NotSupported (None) by
    default, as on real A100/H100 MIG devices."""

    uuid: str
    name: str | None = None  # None: the parent's name
    mem_used: int = 0
    mem_total: int = 10 * 1024**3
    sm_util: int | None = None
    mem_util: int | None = None
    power_mw: int | None = None
    energy_mj: int | None = None
    temp_c: int | None = None
    pids: list[int] = field(default_factory=list)
    failures: dict[str, Failure] = field(default_factory=dict)
    lost: bool = False


@dataclass
class FakeGpu:
    """One physical GPU. ``None`` for a reading means the driver answers NotSupported;
    ``failures[function_name]`` makes that call raise; ``lost`` makes every call raise
    NVMLError_GpuIsLost (a GPU that fell off the bus)."""

    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    sm_util: int | None = 0
    mem_util: int | None = 0
    mem_used: int = 0
    mem_total: int = 80 * 1024**3
    power_mw: int | None = 70_000
    energy_mj: int | None = 1_000_000
    temp_c: int | None = 35
    pids: list[int] = field(default_factory=list)
    mig_capable: bool = False
    mig_mode: int = _real.NVML_DEVICE_MIG_DISABLE
    max_mig: int = 7
    #: Slot j holds a slice or None (an empty slot answers NotFound, like the driver).
    migs: list[FakeMig | None] = field(default_factory=list)
    failures: dict[str, Failure] = field(default_factory=dict)
    lost: bool = False


@dataclass(frozen=True)
class FakeHandle:
    """What nvmlDeviceGetHandleByIndex / nvmlDeviceGetMigDeviceHandleByIndex return."""

    gpu_index: int
    mig_index: int | None = None


class FakeNvml(types.ModuleType):
    """The fake module. Every NVML_* constant of the real module is available on it."""

    def __init__(self, gpus: list[FakeGpu] | None = None, *, driver_loaded: bool = True) -> None:
        super().__init__("pynvml", "fake pynvml (tests.fakes.pynvml)")
        for name in dir(_real):
            if name.startswith(("NVML_", "NVMLError", "c_nvml")) or name in (
                "nvmlFriendlyObject",
                "nvmlExceptionClass",
            ):
                setattr(self, name, getattr(_real, name))
        self.gpus: list[FakeGpu] = list(gpus or [])
        self.driver_loaded = driver_loaded
        self.initialized = False
        #: How often each function was called (tests assert on lost-GPU retries etc.).
        self.calls: Counter[str] = Counter()

    # --- scripting -----------------------------------------------------------------------

    def advance(self, seconds: int = 1) -> None:
        """Let time pass: every energy counter grows by its power x seconds (mW x s = mJ)."""
        for gpu in self.gpus:
            for dev in [gpu, *(m for m in gpu.migs if m is not None)]:
                if dev.energy_mj is not None and dev.power_mw is not None:
                    dev.energy_mj += dev.power_mw * seconds

    # --- library lifecycle ---------------------------------------------------------------

    def nvmlInit(self) -> None:
        self.calls["nvmlInit"] += 1
        if not self.driver_loaded:
            raise NVMLError_LibraryNotFound()
        self.initialized = True

    def nvmlShutdown(self) -> None:
        self.calls["nvmlShutdown"] += 1
        self._check_init()
        self.initialized = False

    def nvmlSystemGetDriverVersion(self) -> str:
        self._check_init()
        return "550.54.15-fake"

    # --- enumeration ---------------------------------------------------------------------

    def nvmlDeviceGetCount(self) -> int:
        self._check_init()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeHandle:
        self._check_init()
        if not 0 <= index < len(self.gpus):
            raise NVMLError_InvalidArgument()
        self._device(FakeHandle(index), "nvmlDeviceGetHandleByIndex")
        return FakeHandle(index)

    def nvmlDeviceGetIndex(self, handle: FakeHandle) -> int:
        self._device(handle, "nvmlDeviceGetIndex")
        return handle.gpu_index

    def nvmlDeviceGetUUID(self, handle: FakeHandle) -> str:
        return self._device(handle, "nvmlDeviceGetUUID").uuid

    def nvmlDeviceGetName(self, handle: FakeHandle) -> str:
        dev = self._device(handle, "nvmlDeviceGetName")
        if isinstance(dev, FakeMig) and dev.name is not None:
            return dev.name  # the driver names a slice "<parent> MIG <profile>"
        return self.gpus[handle.gpu_index].name

    def nvmlDeviceGetMigMode(self, device: FakeHandle) -> list[int]:
        gpu = self._device(device, "nvmlDeviceGetMigMode")
        if not isinstance(gpu, FakeGpu):
            raise NVMLError_InvalidArgument()
        if not gpu.mig_capable:
            raise NVMLError_NotSupported()
        return [gpu.mig_mode, gpu.mig_mode]  # [current, pending]

    def nvmlDeviceGetMaxMigDeviceCount(self, device: FakeHandle) -> int:
        gpu = self._device(device, "nvmlDeviceGetMaxMigDeviceCount")
        if not isinstance(gpu, FakeGpu) or not gpu.mig_capable:
            raise NVMLError_NotSupported()
        return gpu.max_mig

    def nvmlDeviceGetMigDeviceHandleByIndex(self, device: FakeHandle, index: int) -> FakeHandle:
        gpu = self._device(device, "nvmlDeviceGetMigDeviceHandleByIndex")
        if not isinstance(gpu, FakeGpu) or gpu.mig_mode != _real.NVML_DEVICE_MIG_ENABLE:
            raise NVMLError_InvalidArgument()
        if not 0 <= index < gpu.max_mig:
            raise NVMLError_InvalidArgument()
        if index >= len(gpu.migs) or gpu.migs[index] is None:
            raise NVMLError_NotFound()
        return FakeHandle(device.gpu_index, index)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, migDevice: FakeHandle) -> FakeHandle:
        self._check_init()
        if migDevice.mig_index is None:
            raise NVMLError_InvalidArgument()
        return FakeHandle(migDevice.gpu_index)

    def nvmlDeviceIsMigDeviceHandle(self, device: FakeHandle) -> bool:
        self._check_init()
        return device.mig_index is not None

    # --- readings ------------------------------------------------------------------------

    def nvmlDeviceGetUtilizationRates(self, handle: FakeHandle) -> _real.c_nvmlUtilization_t:
        dev = self._device(handle, "nvmlDeviceGetUtilizationRates")
        if dev.sm_util is None or dev.mem_util is None:
            raise NVMLError_NotSupported()
        return _real.c_nvmlUtilization_t(gpu=dev.sm_util, memory=dev.mem_util)

    def nvmlDeviceGetMemoryInfo(
        self, handle: FakeHandle, version: int | None = None
    ) -> _real.c_nvmlMemory_t:
        dev = self._device(handle, "nvmlDeviceGetMemoryInfo")
        return _real.c_nvmlMemory_t(
            total=dev.mem_total, free=max(dev.mem_total - dev.mem_used, 0), used=dev.mem_used
        )

    def nvmlDeviceGetPowerUsage(self, handle: FakeHandle) -> int:
        dev = self._device(handle, "nvmlDeviceGetPowerUsage")
        if dev.power_mw is None:
            raise NVMLError_NotSupported()
        return dev.power_mw  # milliwatts

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: FakeHandle) -> int:
        dev = self._device(handle, "nvmlDeviceGetTotalEnergyConsumption")
        if dev.energy_mj is None:
            raise NVMLError_NotSupported()
        return dev.energy_mj  # millijoules since the driver was loaded

    def nvmlDeviceGetTemperature(self, handle: FakeHandle, sensor: int) -> int:
        dev = self._device(handle, "nvmlDeviceGetTemperature")
        if sensor != _real.NVML_TEMPERATURE_GPU:
            raise NVMLError_InvalidArgument()
        if dev.temp_c is None:
            raise NVMLError_NotSupported()
        return dev.temp_c

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeHandle) -> list[object]:
        dev = self._device(handle, "nvmlDeviceGetComputeRunningProcesses")
        return [
            _real.nvmlFriendlyObject(
                {
                    "pid": pid,
                    "usedGpuMemory": None,
                    "gpuInstanceId": 0xFFFFFFFF,
                    "computeInstanceId": 0xFFFFFFFF,
                }
            )
            for pid in dev.pids
        ]

    # --- internals -----------------------------------------------------------------------

    def _check_init(self) -> None:
        if not self.initialized:
            raise NVMLError_Uninitialized()

    def _device(self, handle: FakeHandle, fn: str) -> FakeGpu | FakeMig:
        """Resolve a handle, counting the call and raising any scripted failure."""
        self.calls[fn] += 1
        self._check_init()
        gpu = self.gpus[handle.gpu_index]
        dev: FakeGpu | FakeMig = gpu
        if handle.mig_index is not None:
            mig = gpu.migs[handle.mig_index]
            if mig is None:
                raise NVMLError_NotFound()
            dev = mig
        if gpu.lost or dev.lost:
            raise NVMLError_GpuIsLost()
        failure = dev.failures.get(fn)
        if failure is not None:
            raise failure() if isinstance(failure, type) else failure
        return dev
