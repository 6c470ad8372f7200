"""Device memory as NVML sees it (benchmarking.md, "Memory", level 3): a background thread samples the used
memory of the whole device (every process, CUDA context included) and keeps the peak and the average.

Without an NVIDIA driver or the pynvml library the sampler is inert and says why (`note`). Where NVML lists more than
one compute process on the device while it samples (concurrent runs, MPS), the figures would count the others': they
read n/a and the note says why."""

from __future__ import annotations

import threading
import time
from typing import Any

LABEL = "device-wide (all processes, CUDA context included)"


def _handle(pynvml, device_index: int):
    """The NVML handle of torch's CUDA device `device_index` (by PCI bus id, so CUDA_VISIBLE_DEVICES is honoured)."""
    try:
        import torch

        p = torch.cuda.get_device_properties(device_index)
        bus = f"{p.pci_domain_id:08x}:{p.pci_bus_id:02x}:{p.pci_device_id:02x}.0"
        return pynvml.nvmlDeviceGetHandleByPciBusId(bus.encode())
    except Exception:
        return pynvml.nvmlDeviceGetHandleByIndex(device_index)


class NvmlSampler:
    """Context manager: `with NvmlSampler(0) as s: ...; s.result()` -> peak / average used MiB, or n/a."""

    def __init__(self, device_index: int = 0, interval_s: float = 0.002):
        self.device_index = device_index
        self.interval_s = interval_s
        self.samples: list[float] = []
        self.note: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml = None
        self._h = None
        self.processes = 0  # the most compute processes NVML listed on the device at once (0: it cannot list them)

    @property
    def available(self) -> bool:
        return self._h is not None

    def __enter__(self) -> "NvmlSampler":
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._h = _handle(pynvml, self.device_index)
        except Exception as e:  # no library, no driver, no device
            self.note = f"NVML n/a: no NVIDIA driver or device ({type(e).__name__}: {e})".strip()
            self._shutdown()
            return self
        self._sample()
        self._count_processes()
        self._thread = threading.Thread(target=self._run, name="attnbench-nvml", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        self.samples.append(self._nvml.nvmlDeviceGetMemoryInfo(self._h).used / 2**20)

    def _count_processes(self) -> None:
        """Processes with a CUDA context on the device (this one included). Counted, not matched by pid: inside a
        container NVML reports host pids."""
        try:
            self.processes = max(self.processes, len(self._nvml.nvmlDeviceGetComputeRunningProcesses(self._h)))
        except Exception:  # an old driver or library, or no permission to list them
            pass

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                self._sample()
                if n % 250 == 0:  # about every half second at the default interval
                    self._count_processes()
            except Exception as e:
                self.note = f"NVML sampling stopped: {e}"
                return
            time.sleep(self.interval_s)

    def _shutdown(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            try:
                self._sample()
            except Exception:
                pass
            self._count_processes()
        if self._h is not None:
            self._shutdown()

    def result(self) -> dict[str, Any]:
        """nvml_peak_mib / nvml_avg_mib (None when n/a), the sample count, the label and a note."""
        if self.samples and self.processes > 1:
            return {"nvml_peak_mib": None, "nvml_avg_mib": None, "nvml_samples": len(self.samples), "nvml_scope": LABEL,
                    "nvml_note": f"n/a: {self.processes} processes on the device at once; its used memory counts "
                                 f"theirs (the allocator columns are this process's own)"}
        if not self.samples:
            return {"nvml_peak_mib": None, "nvml_avg_mib": None, "nvml_samples": 0, "nvml_scope": LABEL,
                    "nvml_note": self.note or "NVML n/a"}
        return {"nvml_peak_mib": max(self.samples), "nvml_avg_mib": sum(self.samples) / len(self.samples),
                "nvml_samples": len(self.samples), "nvml_scope": LABEL, "nvml_note": self.note}
